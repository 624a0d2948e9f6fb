using System.Text.RegularExpressions;
using Vmm.Migration;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>Live migration under faults at random steps (Jepsen's method, on one host): each schedule, drawn from its
/// seed, picks a step of the protocol (the k-th frame of a type, going one way) and what happens there: the link is cut
/// (that frame lost), the source or the target is killed (SIGKILL), or the target stalls (SIGSTOP, then SIGCONT).
/// Then it does what an operator would (a source left in doubt is resumed, which asks the target; a dead target that
/// never ran the VM is declared so) and checks the invariants after each: the guest's console, source and target
/// together, is its console had it never moved, cut short only where a killed host took the only copy with it, with no
/// tick printed twice (two copies never ran), and nothing is left behind on the target. Seeded and replayable:
/// <c>VMM_FAULT_SEEDS=FIRST:COUNT</c> runs COUNT schedules from FIRST (CI runs a few fixed ones; bench/README.md has
/// a long run).</summary>
[Trait("Category", "Process")]
public sealed class MigrationFaultScheduleTests(ITestOutputHelper output) : MigrationProcessTestBase(output)
{
    public enum Fault { CutLink, KillSource, KillTarget, StallTarget }

    /// <summary>The steps a fault may hit: frame type, whether the source sends it, and how many of it a run may see.</summary>
    private static readonly (MigrationFrameType Type, bool FromSource, int MaxIndex)[] Steps =
    [
        (MigrationFrameType.Hello, true, 1), (MigrationFrameType.Ready, false, 1), (MigrationFrameType.Pages, true, 60),
        (MigrationFrameType.PassEnd, true, 3), (MigrationFrameType.PassDone, false, 3), (MigrationFrameType.State, true, 1),
        (MigrationFrameType.Prepared, false, 1), (MigrationFrameType.Commit, true, 1), (MigrationFrameType.Resumed, false, 1),
    ];

    public static IEnumerable<object[]> Seeds()
    {
        var (first, count) = Environment.GetEnvironmentVariable("VMM_FAULT_SEEDS") is { } range && range.Split(':') is [var f, var c]
            ? (int.Parse(f), int.Parse(c)) : (1, 6);
        for (int seed = first; seed < first + count; seed++) yield return [seed];
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Migration_WithAFaultAtARandomStep_KeepsOneCopy_AndTheGuestsOutputWhole(int seed)
    {
        var random = new Random(seed);
        var fault = (Fault)random.Next(4);
        var step = Steps[random.Next(Steps.Length)];
        int index = random.Next(1, step.MaxIndex + 1);
        int stallMs = random.Next(500, 5000);
        Note($"seed {seed}: {fault} at {step.Type} #{index} from the {(step.FromSource ? "source" : "target")}{(fault == Fault.StallTarget ? $", for {stallMs} ms" : "")} (VMM_FAULT_SEEDS={seed}:1 repeats it)");

        var g = Guest(ticks: 120);
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(once: false);
        var source = StartSource(g, socket);
        int seen = 0;
        bool hit = false;
        using var proxy = new FrameCuttingProxy(PortOf(listen), (type, fromSource) =>
        {
            if (type != step.Type || fromSource != step.FromSource || Interlocked.Increment(ref seen) != index) return true;
            hit = true;
            switch (fault)
            {
                case Fault.CutLink:
                    return false;
                case Fault.KillSource:
                    Signal(source, "KILL");
                    break;
                case Fault.KillTarget:
                    Signal(target, "KILL");
                    break;
                case Fault.StallTarget:
                    Signal(target, "STOP");
                    Thread.Sleep(stallMs);
                    Signal(target, "CONT");
                    break;
            }
            return true;
        });
        using (var ctl = Migrate(socket, proxy.Address, "--force"))
        {
            ctl.WaitForExit(Patience);
            Show("ctl", ctl);
        }
        bool sourceKilled = hit && fault == Fault.KillSource, targetKilled = hit && fault == Fault.KillTarget;
        // A killed target's last words are all read before anyone judges by them.
        if (targetKilled) target.WaitForExit(Patience);
        SettleAsAnOperatorWould(socket, source, target, targetKilled);

        int? sourceExit = source.WaitForExit(Patience);
        // The target runs the VM if it took the Commit; it is done once that VM stopped (or it was killed).
        bool ranOnTarget = target.Log.Contains("the source committed");
        if (ranOnTarget && !targetKilled)
            Assert.True(target.WaitFor((_, log) => log.Contains("migration 1: VM stopped"), Patience), $"the VM never ended on the target\n{target}");
        Show("source", source);
        Show("target", target);

        string console = source.Console + target.Console, expected = ExpectedConsole(g);
        var ticks = Regex.Matches(console, @"tick ([0-9a-f]{8})\n").Select(m => Convert.ToInt32(m.Groups[1].Value, 16)).ToList();
        Assert.True(ticks.Distinct().Count() == ticks.Count, $"a tick was printed twice: two copies ran\n{console}");
        Assert.StartsWith(console, expected);
        // Only a killed host may take the only copy with it; otherwise the guest ran to its end, here or there.
        if (!sourceKilled && !(targetKilled && ranOnTarget))
        {
            Assert.Equal(expected, console);
            Assert.True(sourceExit is 0 || sourceExit == GuestSuccess, $"source exit {sourceExit}");
        }
        if (!targetKilled) AssertNothingLeftOnTheTarget(target);
        target.Terminate();
        target.WaitForExit(Patience);
    }

    /// <summary>A source left paused in doubt is resumed, which asks the target. A target that was killed cannot say: the
    /// operator knows from its log whether it ever ran the VM; if not, the source resumes on the operator's word, else
    /// the VM is gone with that host and the paused copy is stopped.</summary>
    private void SettleAsAnOperatorWould(string socket, RunningVmm source, RunningVmm target, bool targetKilled)
    {
        if (source.HasExited) return;
        using var status = new RunningVmm(["ctl", "--socket", socket, "status"]);
        if (status.WaitForExit(Patience) != 0 || !status.Console.Contains("\"state\":\"in-doubt\"")) return;
        Note("the source is in doubt");
        if (!targetKilled)
        {
            using var resume = new RunningVmm(["ctl", "--socket", socket, "resume"]);
            resume.WaitForExit(Patience);
            Show("resume", resume);
            Assert.DoesNotContain("could not be asked", resume.Console);
            return;
        }
        string[] settle = target.Log.Contains("the source committed") ? ["stop"] : ["resume", "--target-not-running"];
        using var settled = new RunningVmm(["ctl", "--socket", socket, .. settle]);
        Assert.True(settled.WaitForExit(Patience) == 0, settled.ToString());
    }

    /// <summary>The daemon runs no VM any more, and holds no migration half taken in.</summary>
    private void AssertNothingLeftOnTheTarget(RunningVmm target)
    {
        Assert.True(target.WaitFor((_, log) => !log.Contains("the source committed") || log.Contains("migration 1: VM stopped"), Patience), target.ToString());
        Assert.DoesNotContain("internal error", target.Log);
    }

    private static void Signal(RunningVmm process, string signal) => HostCommand.Run("kill", $"-{signal}", process.Id.ToString());
}
