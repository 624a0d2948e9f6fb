using CommandLine;
using Vmm.Cli;
using Xunit;

namespace Vmm.Tests.Cli;

public sealed class StandbyOptionsTests
{
    /// <summary>The fence timeout the primary is told: the fence command's (60 s unless given); without one, 0 unless
    /// --fence-timeout-s says someone else (the cluster manager) fences the primary within that time.</summary>
    [Theory]
    [InlineData(new string[0], 0)]
    [InlineData(new[] { "--fence-timeout-s", "20" }, 20)]
    [InlineData(new[] { "--fence-command", "true" }, StandbyOptions.DefaultFenceTimeoutS)]
    [InlineData(new[] { "--fence-command", "true", "--fence-timeout-s", "5" }, 5)]
    public void FenceTimeout_IsZeroOnlyWhenNeitherAFenceCommandNorATimeoutIsGiven(string[] fenceArguments, int expectedSeconds)
    {
        var parsed = new Parser().ParseArguments<StandbyOptions>(["--listen", "127.0.0.1:0", "--disk-dir", "/tmp", .. fenceArguments]);
        var options = Assert.IsType<Parsed<StandbyOptions>>(parsed).Value;
        Assert.Equal(TimeSpan.FromSeconds(expectedSeconds), options.FenceTimeout);
    }

    /// <summary>The primary is told the fence timeout in milliseconds as an int32: above about 24 days it wrapped to a
    /// negative number, which the primary refused only once replication had begun.</summary>
    [Theory]
    [InlineData(new[] { "--fence-timeout-s", "0" }, "--fence-timeout-s 0: it must be 1-86400")]
    [InlineData(new[] { "--fence-timeout-s", "2147484" }, "--fence-timeout-s 2147484: it must be 1-86400")]
    [InlineData(new[] { "--failover-timeout-ms", "49" }, "--failover-timeout-ms 49: it must be 50-600000")]
    [InlineData(new[] { "--fence-timeout-s", "86400", "--failover-timeout-ms", "600000" }, null)]
    public void Timeouts_OutsideTheirRange_AreRefusedNamingIt(string[] arguments, string? expected)
    {
        var parsed = new Parser().ParseArguments<StandbyOptions>(["--listen", "127.0.0.1:0", "--disk-dir", "/tmp", .. arguments]);
        Assert.Equal(expected, Assert.IsType<Parsed<StandbyOptions>>(parsed).Value.TimeoutRefusal());
    }
}
