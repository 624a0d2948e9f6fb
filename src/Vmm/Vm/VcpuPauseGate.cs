namespace Vmm.Vm;

/// <summary>Where vCPU threads park while the VM is paused. A pause asks every vCPU to leave KVM_RUN and
/// waits until all of them are parked, so the caller knows no guest instruction runs until resume.</summary>
internal sealed class VcpuPauseGate : IDisposable
{
    private readonly ManualResetEventSlim _released = new(initialState: true);
    private CountdownEvent? _parked;
    private volatile bool _pauseRequested;

    public bool PauseRequested => _pauseRequested;

    /// <summary>Starts a pause of <paramref name="vcpuCount"/> vCPUs; the caller then kicks them.</summary>
    public void RequestPause(int vcpuCount)
    {
        _parked = new CountdownEvent(vcpuCount);
        _released.Reset();
        _pauseRequested = true;
    }

    public bool WaitUntilParked(TimeSpan timeout) => _parked?.Wait(timeout) ?? true;

    /// <summary>Called by a vCPU thread that saw the pause request: counts itself parked and waits.</summary>
    public void Park()
    {
        _parked?.Signal();
        _released.Wait();
    }

    /// <summary>Resumes (or, when the VM stops, releases) every parked vCPU.</summary>
    public void Release()
    {
        _pauseRequested = false;
        _released.Set();
    }

    public void Dispose()
    {
        _released.Dispose();
        _parked?.Dispose();
    }
}
