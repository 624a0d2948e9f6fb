namespace Vmm.Firmware;

/// <summary>What <see cref="FirmwareGuests.DirtyMemoryWithChecksum"/> does: dirty <paramref name="RegionMiB"/> MiB at
/// <see cref="FirmwareGuests.DirtyingRegionAddress"/> at <paramref name="DirtyMiBPerSecond"/>, in ticks of
/// <paramref name="TickMs"/> ms timed with the TSC (<paramref name="TscKhz"/>, from KVM_GET_TSC_KHZ), for
/// <paramref name="Ticks"/> ticks (0: forever). <paramref name="FillRandomFirst"/> fills the region with a
/// xorshift64 sequence from <paramref name="Seed"/> first, so that a migration has no zero pages to skip and the
/// final check can find any byte that changed.</summary>
public sealed record DirtyingGuestOptions(
    int RegionMiB,
    double DirtyMiBPerSecond,
    uint TscKhz,
    int TickMs = 100,
    int Ticks = 0,
    bool FillRandomFirst = false,
    ulong Seed = 0x9e3779b97f4a7c15)
{
    public const int PageBytes = 4096;

    /// <summary>The region ends below 3 GiB, where vmm's MMIO hole begins.</summary>
    public const int MaxRegionMiB = (int)((0xc000_0000 - FirmwareGuests.DirtyingRegionAddress) >> 20);

    /// <summary>1 PiB/s: far beyond what any guest writes, and small enough that a tick's page count cannot overflow.</summary>
    public const double MaxDirtyMiBPerSecond = 1 << 30;

    public int PageCount => RegionMiB * ((1 << 20) / PageBytes);

    /// <summary>Pages dirtied in each tick, spread evenly over it.</summary>
    public long PagesPerTick => (long)Math.Round(DirtyMiBPerSecond * (1 << 20) / PageBytes * TickMs / 1000);

    public ulong TickTscCycles => (ulong)TscKhz * (ulong)TickMs;

    /// <summary>The guest visits page (write × stride) mod <see cref="PageCount"/>: a stride coprime with the page
    /// count reaches every page once per <see cref="PageCount"/> writes, and one near 0.618 of it puts consecutive
    /// writes far apart, as a real workload's are, rather than one sweep a migration could follow.</summary>
    public int PageStride
    {
        get
        {
            if (PageCount == 1) return 0;
            int stride = (int)(PageCount * 0.618) | 1;
            while (GreatestCommonDivisor(stride, PageCount) != 1) stride += 2;
            return stride;
        }
    }

    /// <summary>The page that the guest's <paramref name="writeIndex"/>-th dirtying write (counting from 0) replaces
    /// the first qword of. <see cref="FirmwareGuests.CounterAddress"/> holds the number of writes done.</summary>
    public int PageOfWrite(ulong writeIndex) =>
        (int)(writeIndex % (ulong)PageCount * (ulong)PageStride % (ulong)PageCount);

    /// <summary>The value the <paramref name="writeIndex"/>-th dirtying write stores: never zero (an odd multiplier
    /// is invertible mod 2^64) and different for every write.</summary>
    public static ulong ValueOfWrite(ulong writeIndex) => (writeIndex + 1) * ValueMultiplier;

    internal const ulong ValueMultiplier = 0x9e3779b97f4a7c15;

    internal void Validate()
    {
        if (RegionMiB < 1 || RegionMiB > MaxRegionMiB)
            throw new ArgumentOutOfRangeException(nameof(RegionMiB), RegionMiB, $"the region must be 1 to {MaxRegionMiB} MiB");
        if (!(DirtyMiBPerSecond >= 0 && DirtyMiBPerSecond <= MaxDirtyMiBPerSecond))
            throw new ArgumentOutOfRangeException(nameof(DirtyMiBPerSecond), DirtyMiBPerSecond, $"the dirty rate must be 0 to {MaxDirtyMiBPerSecond} MiB/s");
        if (TscKhz == 0)
            throw new ArgumentOutOfRangeException(nameof(TscKhz), TscKhz, "the TSC frequency is needed to time the ticks (KVM_GET_TSC_KHZ)");
        if (TickMs < 1)
            throw new ArgumentOutOfRangeException(nameof(TickMs), TickMs, "a tick lasts at least 1 ms");
        if (Ticks < 0)
            throw new ArgumentOutOfRangeException(nameof(Ticks), Ticks, "0 means forever; a negative count means nothing");
        if (Seed == 0)
            throw new ArgumentOutOfRangeException(nameof(Seed), Seed, "xorshift64 stays at 0 forever from a zero seed");
    }

    private static int GreatestCommonDivisor(int a, int b) => b == 0 ? a : GreatestCommonDivisor(b, a % b);
}
