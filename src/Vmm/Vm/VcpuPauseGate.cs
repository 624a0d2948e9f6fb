namespace Vmm.Vm;

/// <summary>Where vCPU threads park while the VM is paused. A pause asks every vCPU to leave KVM_RUN and
/// waits until all of them are parked, so the caller knows no guest instruction runs until it releases them.
/// A pause that does not complete in time is released again: a vCPU that parks late, or never got there,
/// runs on, and a later pause counts only the vCPUs that park for it.</summary>
internal sealed class VcpuPauseGate
{
    private readonly object _lock = new();
    private bool _pauseRequested;
    private int _generation;
    private int _parked;

    public bool PauseRequested => Volatile.Read(ref _pauseRequested);

    /// <summary>Starts a pause; the caller then kicks the vCPUs.</summary>
    public void RequestPause()
    {
        lock (_lock)
        {
            _generation++;
            _parked = 0;
            Volatile.Write(ref _pauseRequested, true);
        }
    }

    /// <summary>Waits until <paramref name="vcpuCount"/> vCPUs are parked for the current pause; false when they are
    /// not in time, or when the pause was released meanwhile (the VM stopping: its vCPUs exit instead of parking).</summary>
    public bool WaitUntilParked(int vcpuCount, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        lock (_lock)
        {
            while (_parked < vcpuCount)
            {
                if (!_pauseRequested) return false;
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || !Monitor.Wait(_lock, left)) return _parked >= vcpuCount;
            }
            return true;
        }
    }

    /// <summary>Called by a vCPU thread that saw the pause request: counts itself parked and waits for the
    /// release (or for this pause to be replaced by another, which it then parks for afresh).</summary>
    public void Park()
    {
        lock (_lock)
        {
            if (!_pauseRequested) return;
            int generation = _generation;
            _parked++;
            Monitor.PulseAll(_lock);
            while (_pauseRequested && _generation == generation) Monitor.Wait(_lock);
        }
    }

    /// <summary>Ends the pause (a resume, a pause given up, or the VM stopping): every parked vCPU runs on.</summary>
    public void Release()
    {
        lock (_lock)
        {
            Volatile.Write(ref _pauseRequested, false);
            Monitor.PulseAll(_lock);
        }
    }
}
