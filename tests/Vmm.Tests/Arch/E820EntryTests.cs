using Vmm.Arch;
using Xunit;

namespace Vmm.Tests.Arch;

public sealed class E820EntryTests
{
    private static readonly E820Entry LowRam = new(0, 0x9fc00, E820Type.Ram);
    private static readonly E820Entry EbdaReserved = new(0x9fc00, 0x100000 - 0x9fc00, E820Type.Reserved);

    [Fact]
    public void E820Entry_SmallGuestHasLowRamReservedEbdaAndHighRam()
    {
        var map = E820Entry.MapFor(X86Layout.RamRanges(64UL << 20));
        Assert.Equal([LowRam, EbdaReserved, new E820Entry(0x100000, (64UL << 20) - 0x100000, E820Type.Ram)], map);
    }

    [Fact]
    public void E820Entry_ReservedEntryCoversEbdaUpToOneMiB()
    {
        var map = E820Entry.MapFor(X86Layout.RamRanges(64UL << 20));
        Assert.Equal(X86Layout.EbdaAddress, map[1].Address);
        Assert.Equal(X86Layout.HighMemoryAddress, map[1].Address + map[1].SizeBytes);
        Assert.Equal(E820Type.Reserved, map[1].Type);
        Assert.Equal(map[0].Address + map[0].SizeBytes, map[1].Address);
    }

    [Fact]
    public void E820Entry_GuestExactlyHoleSizeEndsAtHole()
    {
        var map = E820Entry.MapFor(X86Layout.RamRanges(X86Layout.MmioHoleAddress));
        Assert.Equal([LowRam, EbdaReserved, new E820Entry(0x100000, 0xc000_0000 - 0x100000, E820Type.Ram)], map);
    }

    [Fact]
    public void E820Entry_LargeGuestIsSplitAroundTheHole()
    {
        var map = E820Entry.MapFor(X86Layout.RamRanges(6UL << 30));
        Assert.Equal(
        [
            LowRam,
            EbdaReserved,
            new E820Entry(0x100000, 0xc000_0000 - 0x100000, E820Type.Ram),
            new E820Entry(0x1_0000_0000, (6UL << 30) - 0xc000_0000, E820Type.Ram),
        ], map);
        Assert.DoesNotContain(map, e => e.Address < X86Layout.FourGiB && e.Address + e.SizeBytes > X86Layout.MmioHoleAddress);
    }

    [Fact]
    public void E820Entry_RamBelowOneMiBAddsNoHighEntry()
    {
        var map = E820Entry.MapFor([(0UL, 0x80000UL)]);
        Assert.Equal([LowRam, EbdaReserved], map);
    }

    [Fact]
    public void E820Entry_TypesHaveTheBiosValues()
    {
        Assert.Equal(1u, (uint)E820Type.Ram);
        Assert.Equal(2u, (uint)E820Type.Reserved);
        Assert.Equal(20, E820Entry.SizeInZeroPage);
    }
}
