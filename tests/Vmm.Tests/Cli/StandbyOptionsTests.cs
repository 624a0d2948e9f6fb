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
}
