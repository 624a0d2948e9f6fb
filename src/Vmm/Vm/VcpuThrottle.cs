namespace Vmm.Vm;

/// <summary>Auto-converge for live migration: takes a share of every vCPU's time so that a guest writing
/// memory faster than the link can send it slows down. Every timeslice each vCPU is kicked out of
/// KVM_RUN and sleeps for <c>slice × p / (100 − p)</c>, so at p percent the guest runs (100 − p)% of the time.</summary>
internal sealed class VcpuThrottle : IDisposable
{
    public const int MaxPercent = 99;
    private static readonly TimeSpan Timeslice = TimeSpan.FromMilliseconds(10);

    private readonly IReadOnlyList<VcpuRunner> _runners;
    private Timer? _timer;
    private volatile int _percent;

    public VcpuThrottle(IReadOnlyList<VcpuRunner> runners) => _runners = runners;

    public int Percent => _percent;

    public void Set(int percent)
    {
        _percent = Math.Clamp(percent, 0, MaxPercent);
        // Made on first use: most VMs are never throttled, and the timer machinery costs start-up time.
        if (_percent > 0) _timer ??= new Timer(_ => Tick());
        _timer?.Change(_percent == 0 ? Timeout.InfiniteTimeSpan : Timeslice, _percent == 0 ? Timeout.InfiniteTimeSpan : Timeslice);
    }

    /// <summary>How long a vCPU sleeps when its slice is up.</summary>
    public TimeSpan SleepPerSlice
    {
        get
        {
            int p = _percent;
            return p == 0 ? TimeSpan.Zero : Timeslice * p / (100 - p);
        }
    }

    private void Tick()
    {
        foreach (var runner in _runners) runner.RequestThrottleSleep();
    }

    public void Dispose() => _timer?.Dispose();
}
