using Vmm.Fuzz;
using Xunit;

namespace Vmm.Tests.Fuzz;

/// <summary>Every fuzz target in-process over generated inputs, as CI's smoke run does: nothing but the
/// target's expected failures comes out, and the inputs reach both sides (some accepted, some refused).</summary>
public sealed class FuzzTargetTests
{
    public static TheoryData<string> Targets() => [.. FuzzTargets.All.Select(t => t.Name)];

    [Theory]
    [MemberData(nameof(Targets))]
    public void GeneratedInputs_AreAcceptedOrRefusedButNeverCrash(string name)
    {
        var target = FuzzTargets.Find(name)!;
        var output = new StringWriter();

        Assert.True(SmokeRun.Run(target, 800, seed: 11, output) == 0, output.ToString());

        var summary = System.Text.RegularExpressions.Regex.Match(output.ToString(), @"(\d+) accepted, (\d+) refused");
        Assert.True(int.Parse(summary.Groups[1].Value) > 0, $"no input was accepted:\n{output}");
        Assert.True(int.Parse(summary.Groups[2].Value) > 0, $"no input was refused:\n{output}");
    }

    [Fact]
    public void MigrationTarget_WithRepairedChecksums_ReachesThePagesAndTheState()
    {
        var output = new StringWriter();
        SmokeRun.Run(FuzzTargets.Find("migration")!, 2000, seed: 7, output);
        // The page checks: an address with unknown flag bits, or outside guest RAM.
        Assert.Matches("has unknown flags|is not inside guest RAM", output.ToString());
        Assert.Contains("is not a boolean", output.ToString());
    }
}
