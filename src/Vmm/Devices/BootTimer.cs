using Vmm.Diagnostics;

namespace Vmm.Devices;

/// <summary>A guest write to port 0x440 makes vmm print how long it has been since the vmm process
/// started: the guest marks "booted" (e.g. from init) and the figure includes everything vmm did first. The
/// guest decides how often it writes, so the lines are rate limited.</summary>
public sealed class BootTimer(Logger log, Func<TimeSpan> sinceProcessStart) : IBusDevice
{
    public const ushort Port = 0x440;

    private readonly RateLimitedLog _log = new(log);
    private int _marks;

    public void Read(ulong offset, Span<byte> data) => data.Fill(0xff);

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        int mark = Interlocked.Increment(ref _marks);
        _log.Info($"boot timer: guest mark {mark} at {sinceProcessStart().TotalMilliseconds:F1} ms since vmm started");
    }
}
