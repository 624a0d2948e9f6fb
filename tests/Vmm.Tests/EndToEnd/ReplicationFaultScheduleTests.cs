using System.Text.Json;
using System.Text.RegularExpressions;
using Vmm.Migration;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>Replication, failover and handover under faults at random steps, as the migration harness does for
/// migrations: each schedule, drawn from its seed, picks a step of the replication protocol (the k-th frame of a type,
/// going one way: the first copy's pass ends and their answers, the epochs' ends and their commits, a handover and its
/// echo) and what happens there: the link is cut (that frame lost), the primary or the standby is killed (SIGKILL), or
/// one of them stalls (SIGSTOP for 0.5-6 s, then SIGCONT); and whether the operator hands the VM over once it is
/// protected. The standby fences by killing the primary, as a real fence would. Then it settles as an operator would
/// (a handed-over VM, or a replica whose primary is dead, is failed over) and checks: no tick printed twice across both
/// consoles (never two copies running, no released output repeated), the primary's console a beginning and the
/// resumed guest's an end of the unmoved guest's, and the guest finished somewhere unless a killed primary took the only
/// copy. Seeded and replayable: <c>VMM_FAULT_SEEDS=FIRST:COUNT</c> (bench/fault-schedules.sh runs both harnesses).</summary>
[Trait("Category", "Process")]
public sealed class ReplicationFaultScheduleTests(ITestOutputHelper output) : MigrationProcessTestBase(output)
{
    public enum Fault { CutLink, KillPrimary, KillStandby, StallStandby, StallPrimary }

    /// <summary>The steps a fault may hit: frame type, whether the primary sends it, and how many of it a run may see.</summary>
    private static readonly (MigrationFrameType Type, bool FromPrimary, int MaxIndex)[] Steps =
    [
        (MigrationFrameType.Hello, true, 1), (MigrationFrameType.Ready, false, 1), (MigrationFrameType.PassEnd, true, 2),
        (MigrationFrameType.PassDone, false, 2), (MigrationFrameType.EpochEnd, true, 30), (MigrationFrameType.EpochCommitted, false, 30),
        (MigrationFrameType.Handover, true, 1), (MigrationFrameType.Handover, false, 1),
    ];

    public static IEnumerable<object[]> Seeds() => FaultSeeds(4);

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Replication_WithAFaultAtARandomStep_NeverRunsTwoCopies_AndTheGuestsOutputIsNeitherRepeatedNorCutShort(int seed)
    {
        var random = new Random(seed);
        var fault = (Fault)random.Next(5);
        var step = Steps[random.Next(Steps.Length)];
        int index = random.Next(1, step.MaxIndex + 1);
        int stallMs = random.Next(500, 6000);
        // A handover step is only reached when the operator asks for one.
        bool handover = step.Type == MigrationFrameType.Handover || random.Next(3) == 0;
        Note($"seed {seed}: {fault} at {step.Type} #{index} from the {(step.FromPrimary ? "primary" : "standby")}" +
             $"{(fault is Fault.StallStandby or Fault.StallPrimary ? $", for {stallMs} ms" : "")}{(handover ? ", with a handover" : "")} (VMM_FAULT_SEEDS={seed}:1 repeats it)");

        var g = Guest(regionMiB: 32, dirtyMiBPerSecond: 50, ticks: 200);
        string socket = Path.Combine(_directory, "primary.sock");
        var primary = StartSource(g, socket);
        var (standby, address, api) = StartStandby("standby", KillingFence(primary.Id));
        int seen = 0;
        bool hit = false;
        int? primaryExit = null;
        using (var link = new FrameCuttingProxy(PortOf(address), (type, fromPrimary) =>
        {
            if (type != step.Type || fromPrimary != step.FromPrimary || Interlocked.Increment(ref seen) != index) return true;
            hit = true;
            switch (fault)
            {
                case Fault.CutLink:
                    return false;
                case Fault.KillPrimary:
                    Signal(primary, "KILL");
                    break;
                case Fault.KillStandby:
                    Signal(standby, "KILL");
                    break;
                case Fault.StallStandby or Fault.StallPrimary:
                    var stalled = fault == Fault.StallStandby ? standby : primary;
                    Signal(stalled, "STOP");
                    Thread.Sleep(stallMs);
                    Signal(stalled, "CONT");
                    break;
            }
            return true;
        }))
        {
            bool protectedOnce = Ctl(socket, "replicate", "--to", link.Address, "--interval-ms", "100");
            if (handover && protectedOnce) Ctl(socket, "replicate", "--handover");
            // The guest runs its course on the primary, or the primary ends (killed, fenced, handed over).
            primaryExit = primary.WaitForExit(Patience);
            SettleAsAnOperatorWould(standby, api, Died(primaryExit));
        }
        int? standbyExit = standby.HasExited ? standby.WaitForExit(Patience) : null;
        if (!standby.HasExited)
        {
            standby.Terminate();
            standby.WaitForExit(Patience);
        }
        Note(hit ? "the fault was hit" : "the run never reached that step");
        Show("primary", primary);
        Show("standby", standby);

        string expected = ExpectedConsole(g), before = primary.Console, after = standby.Console;
        var ticks = Regex.Matches(before + after, @"tick ([0-9a-f]{8})\n").Select(m => Convert.ToInt32(m.Groups[1].Value, 16)).ToList();
        Assert.True(ticks.Distinct().Count() == ticks.Count, $"a tick was printed twice: two copies ran, or released output was repeated\n{before}\n---\n{after}");
        Assert.StartsWith(before, expected);
        if (after.Length > 0)
        {
            Assert.EndsWith(after, expected);
            Assert.True(LastTick(before) < FirstTick(after), $"the primary printed tick {LastTick(before)}, the resumed guest began at tick {FirstTick(after)}");
        }
        // The guest finished somewhere, unless a killed (or fenced) primary took the only copy: nothing committed yet.
        bool finished = before == expected || (after.Length > 0 && standbyExit == GuestSuccess);
        Assert.True(finished || (Died(primaryExit) && !standby.Log.Contains("failover: VM")),
            $"the guest did not finish anywhere (primary exit {primaryExit}, standby exit {standbyExit})");
    }

    /// <summary>A handed-over VM is resumed on the standby (the operator finishes the planned move); a replica whose
    /// primary is dead (killed, or fenced by the standby while its fence did not finish the job) is resumed on the
    /// operator's word; a standby that resumed the VM runs it to its end.</summary>
    private void SettleAsAnOperatorWould(RunningVmm standby, string api, bool primaryDead)
    {
        if (standby.HasExited) return;
        string phase = SettledPhase(standby, api);
        Note($"the standby settled in phase {phase}");
        bool resumes = phase == "running"
            || ((phase == "handed-over" || (primaryDead && phase is "primary-lost" or "fence-failed" or "stale")) && Ctl(api, "failover"));
        // A standby that resumed the VM runs it to its end; one that holds nothing stands by until the test stops it.
        if (resumes) standby.WaitForExit(Patience);
    }

    /// <summary>The standby's phase once it has decided what to do with what it holds (or "exited").</summary>
    private static string SettledPhase(RunningVmm standby, string api)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (DateTime.UtcNow < deadline && !standby.HasExited)
        {
            using var ctl = new RunningVmm(["ctl", "--socket", api, "status"]);
            if (ctl.WaitForExit(Patience) == 0 && JsonDocument.Parse(ctl.Console).RootElement is var status)
            {
                // A resumed VM answers on the same socket with its own status, which has no phase.
                if (!status.TryGetProperty("phase", out var phase)) return "running";
                if (phase.GetString() is not ("replicating" or "primary-lost" or "fencing") and { } settled) return settled;
                // Lost for good only once the failover timeout and the fence ran: keep asking.
                if (phase.GetString() == "primary-lost" && standby.Log.Contains("no --fence-command")) return "primary-lost";
            }
            Thread.Sleep(100);
        }
        return standby.HasExited ? "exited" : "undecided";
    }

    /// <summary>Whether the primary died (killed, or fenced) rather than ending its guest or handing it over.</summary>
    private static bool Died(int? exitCode) => exitCode is not 0 && exitCode != GuestSuccess;

    private static bool Ctl(string socket, params string[] arguments)
    {
        using var ctl = new RunningVmm(["ctl", "--socket", socket, .. arguments]);
        return ctl.WaitForExit(Patience) == 0;
    }
}
