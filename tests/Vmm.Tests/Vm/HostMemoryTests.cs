using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Vm;

public sealed class HostMemoryTests
{
    private const string Meminfo = """
        MemTotal:       24576000 kB
        MemFree:        20000000 kB
        MemAvailable:   16000000 kB
        Buffers:          100000 kB
        SwapTotal:       2048000 kB
        SwapFree:        2048000 kB
        """;

    [Fact]
    public void AGuestBeyondRamAndSwap_IsRefusedNamingBoth()
    {
        string? refusal = HostMemory.Refusal(1UL << 40, Meminfo);
        Assert.Equal("--memory 1024 GiB is more than this host has (23.4 GiB of RAM and 2 GiB of swap)", refusal);
    }

    [Fact]
    public void AGuestWithinRamAndSwap_IsAccepted()
    {
        Assert.Null(HostMemory.Refusal((24576000UL + 2048000) << 10, Meminfo));
        Assert.Null(HostMemory.Refusal(256UL << 20, Meminfo));
    }

    [Fact]
    public void AGuestBeyondWhatIsAvailableNow_IsAWarning()
    {
        Assert.Contains("OOM killer", HostMemory.Warning(20UL << 30, Meminfo));
        Assert.Null(HostMemory.Warning(1UL << 30, Meminfo));
    }

    [Theory]
    [InlineData("")]
    [InlineData("MemTotal: lots\n")]
    [InlineData("MemTotal: 99999999999999999999999 kB\n")]
    public void AnUnreadableMeminfo_RefusesNothing(string meminfo)
    {
        Assert.Null(HostMemory.Refusal(1UL << 40, meminfo));
        Assert.Null(HostMemory.Warning(1UL << 40, meminfo));
    }
}
