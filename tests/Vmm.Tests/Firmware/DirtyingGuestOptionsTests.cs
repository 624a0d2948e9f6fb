using Vmm.Firmware;
using Xunit;

namespace Vmm.Tests.Firmware;

public sealed class DirtyingGuestOptionsTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(16)]
    [InlineData(100)]
    public void PageOfWrite_VisitsEveryPageOnceInEachRoundOfPageCountWrites(int regionMiB)
    {
        var options = new DirtyingGuestOptions(regionMiB, 1, TscKhz: 1_000_000);

        var firstRound = Enumerable.Range(0, options.PageCount).Select(w => options.PageOfWrite((ulong)w)).ToHashSet();
        var secondRound = Enumerable.Range(options.PageCount, options.PageCount).Select(w => options.PageOfWrite((ulong)w)).ToHashSet();

        Assert.Equal(options.PageCount, firstRound.Count);
        Assert.Equal(firstRound, secondRound);
        Assert.All(firstRound, page => Assert.InRange(page, 0, options.PageCount - 1));
    }

    [Fact]
    public void PageCount_OfTheLargestRegion_DoesNotOverflow()
    {
        var options = new DirtyingGuestOptions(DirtyingGuestOptions.MaxRegionMiB, 1, TscKhz: 1_000_000);

        Assert.Equal(DirtyingGuestOptions.MaxRegionMiB * 256, options.PageCount);
        Assert.InRange(options.PageOfWrite(ulong.MaxValue), 0, options.PageCount - 1);
    }

    [Fact]
    public void PageOfWrite_PutsConsecutiveWritesOnDistantPages()
    {
        var options = new DirtyingGuestOptions(16, 1, TscKhz: 1_000_000);

        int distance = Math.Abs(options.PageOfWrite(1) - options.PageOfWrite(0));

        Assert.InRange(distance, options.PageCount / 4, options.PageCount * 3 / 4);
    }

    [Theory]
    [InlineData(20, 50, 256)]
    [InlineData(4, 100, 102)]
    [InlineData(0, 100, 0)]
    [InlineData(1, 1, 0)]
    public void PagesPerTick_IsTheRateInPagesTimesTheTick(double miBPerSecond, int tickMs, long expectedPages)
    {
        Assert.Equal(expectedPages, new DirtyingGuestOptions(16, miBPerSecond, 1_000_000, tickMs).PagesPerTick);
    }

    [Fact]
    public void ValueOfWrite_IsNeverZeroAndChangesEveryWrite()
    {
        var values = Enumerable.Range(0, 10_000).Select(w => DirtyingGuestOptions.ValueOfWrite((ulong)w)).ToList();

        Assert.DoesNotContain(0UL, values);
        Assert.Equal(values.Count, values.Distinct().Count());
    }

    [Theory]
    [InlineData(0, 1.0, 1_000_000u, 100, 0, 1UL)]
    [InlineData(DirtyingGuestOptions.MaxRegionMiB + 1, 1.0, 1_000_000u, 100, 0, 1UL)]
    [InlineData(16, -1.0, 1_000_000u, 100, 0, 1UL)]
    [InlineData(16, double.NaN, 1_000_000u, 100, 0, 1UL)]
    [InlineData(16, 1.0, 0u, 100, 0, 1UL)]
    [InlineData(16, 1.0, 1_000_000u, 0, 0, 1UL)]
    [InlineData(16, 1.0, 1_000_000u, 100, -1, 1UL)]
    [InlineData(16, 1.0, 1_000_000u, 100, 0, 0UL)]
    public void DirtyMemoryWithChecksum_RejectsOptionsItCannotRun(int regionMiB, double miBPerSecond, uint tscKhz, int tickMs, int ticks, ulong seed)
    {
        var options = new DirtyingGuestOptions(regionMiB, miBPerSecond, tscKhz, tickMs, ticks, Seed: seed);

        Assert.Throws<ArgumentOutOfRangeException>(() => FirmwareGuests.DirtyMemoryWithChecksum(options));
    }
}
