using Vmm.Diagnostics;

namespace Vmm.Devices;

/// <summary>Routes guest port I/O or MMIO accesses to the device registered for the address. An access
/// nobody claims reads as all ones (what an empty ISA bus or unmapped MMIO returns) and drops writes,
/// and is logged once per address (for a bounded number of addresses) so a probing guest does not flood
/// the log or grow vmm's memory.</summary>
public sealed class DeviceBus(string name, Logger log)
{
    private readonly record struct Range(ulong Start, ulong Length, IBusDevice Device);

    /// <summary>A guest chooses the addresses it probes: remembering each would let it grow the set without bound.</summary>
    public const int MaxReportedAddresses = 256;

    private Range[] _ranges = [];
    private readonly HashSet<(ulong, bool)> _reportedUnhandled = [];
    private long _unclaimedAccesses;

    /// <summary>Accesses nobody claimed, counted (each address is logged once, up to <see cref="MaxReportedAddresses"/>).</summary>
    public long UnclaimedAccesses => Interlocked.Read(ref _unclaimedAccesses);

    public void Register(ulong start, ulong length, IBusDevice device)
    {
        if (length == 0 || start + length < start) throw new ArgumentException($"invalid {name} range 0x{start:x}+0x{length:x}");
        foreach (var r in _ranges)
            if (start < r.Start + r.Length && r.Start < start + length)
                throw new InvalidOperationException($"{name} range 0x{start:x}+0x{length:x} overlaps a device at 0x{r.Start:x}+0x{r.Length:x}");
        _ranges = [.. _ranges, new Range(start, length, device)];
        Array.Sort(_ranges, (a, b) => a.Start.CompareTo(b.Start));
    }

    public void Read(ulong address, Span<byte> data)
    {
        if (Find(address, data.Length) is { } r)
        {
            r.Device.Read(address - r.Start, data);
            return;
        }
        data.Fill(0xff);
        ReportUnhandled(address, data.Length, isWrite: false);
    }

    public void Write(ulong address, ReadOnlySpan<byte> data)
    {
        if (Find(address, data.Length) is { } r)
        {
            r.Device.Write(address - r.Start, data);
            return;
        }
        ReportUnhandled(address, data.Length, isWrite: true);
    }

    private Range? Find(ulong address, int length)
    {
        var ranges = _ranges;
        int lo = 0, hi = ranges.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            var r = ranges[mid];
            if (address < r.Start) hi = mid - 1;
            else if (address - r.Start >= r.Length) lo = mid + 1;
            else return (ulong)length <= r.Length - (address - r.Start) ? r : null;
        }
        return null;
    }

    private void ReportUnhandled(ulong address, int length, bool isWrite)
    {
        Interlocked.Increment(ref _unclaimedAccesses);
        lock (_reportedUnhandled)
        {
            if (_reportedUnhandled.Count > MaxReportedAddresses || !_reportedUnhandled.Add((address, isWrite))) return;
            if (_reportedUnhandled.Count > MaxReportedAddresses)
            {
                log.Debug($"unhandled {name} accesses at {MaxReportedAddresses} addresses reported; further addresses are only counted");
                return;
            }
        }
        log.Debug(isWrite
            ? $"unhandled {name} write at 0x{address:x} ({length} bytes): ignored (reported once)"
            : $"unhandled {name} read at 0x{address:x} ({length} bytes): returning all ones (reported once)");
    }
}
