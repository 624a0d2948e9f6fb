using System.Text.RegularExpressions;
using Vmm.Migration;
using Vmm.Tests.Migration;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>Live migration under faults at random steps (Jepsen's method, on one host): each schedule, drawn from its
/// seed, picks a step of the protocol (the k-th frame of a type, going one way) and what happens there: the link is cut
/// (that frame lost), the source or the target is killed (SIGKILL), or the target stalls (SIGSTOP, then SIGCONT); and
/// how the VM travels: plain, with its disk image copied (<c>--copy-disks</c>; or copied onto a target disk too small
/// for it, a tmpfs that fills up half way), or over several connections. (Not over
/// TLS: the proxy that finds each step reads the frames.)
/// Then it does what an operator would (a source left in doubt is resumed, which asks the target; a dead target that
/// never ran the VM is declared so) and checks the invariants after each: the guest's console, source and target
/// together, is its console had it never moved, cut short only where a killed host took the only copy with it, with no
/// tick printed twice (two copies never ran), nothing is left behind on the target, and a copied disk image is there
/// whole (byte for byte the source's) exactly when the target may run the VM, and nowhere else. Seeded and replayable:
/// <c>VMM_FAULT_SEEDS=FIRST:COUNT</c> runs COUNT schedules from FIRST (CI runs a few fixed ones; bench/README.md has
/// a long run).</summary>
[Trait("Category", "Process")]
public sealed class MigrationFaultScheduleTests(ITestOutputHelper output) : MigrationProcessTestBase(output)
{
    public enum Fault { CutLink, KillSource, KillTarget, StallTarget }

    public enum Transport { Plain, CopyDisks, Connections, CopyDisksOntoAFullDisk }

    /// <summary>A tmpfs mounted for a full target disk, unmounted when the test ends.</summary>
    private string? _mounted;

    public override void Dispose()
    {
        if (_mounted is not null) HostCommand.Run("umount", "-l", _mounted);
        base.Dispose();
    }

    /// <summary>The steps a fault may hit: frame type, whether the source sends it, and how many of it a run may see.</summary>
    private static readonly (MigrationFrameType Type, bool FromSource, int MaxIndex)[] Steps =
    [
        (MigrationFrameType.Hello, true, 1), (MigrationFrameType.Ready, false, 1), (MigrationFrameType.Pages, true, 60),
        (MigrationFrameType.PassEnd, true, 3), (MigrationFrameType.PassDone, false, 3), (MigrationFrameType.State, true, 1),
        (MigrationFrameType.Prepared, false, 1), (MigrationFrameType.Commit, true, 1), (MigrationFrameType.Resumed, false, 1),
    ];

    public static IEnumerable<object[]> Seeds() => FaultSeeds(6);

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Migration_WithAFaultAtARandomStep_KeepsOneCopy_AndTheGuestsOutputWhole(int seed)
    {
        var random = new Random(seed);
        var fault = (Fault)random.Next(4);
        var step = Steps[random.Next(Steps.Length)];
        int index = random.Next(1, step.MaxIndex + 1);
        int stallMs = random.Next(500, 5000);
        var transport = (Transport)random.Next(4);
        bool copiesDisk = transport is Transport.CopyDisks or Transport.CopyDisksOntoAFullDisk;
        int connections = random.Next(2, MigrationHello.MaxConnections + 1);
        // A copied disk travels first: some schedules hit one of its frames instead of a page's.
        if (copiesDisk && step.Type == MigrationFrameType.Pages && random.Next(2) == 0)
            (step, index) = ((MigrationFrameType.DiskData, true, DiskDataFrames), random.Next(1, DiskDataFrames + 1));
        string how = transport switch
        {
            Transport.CopyDisks => "copying its disk",
            Transport.CopyDisksOntoAFullDisk => "copying its disk onto a target disk that fills up",
            Transport.Connections => $"over {connections} connections",
            _ => "plain",
        };
        Note($"seed {seed}: {fault} at {step.Type} #{index} from the {(step.FromSource ? "source" : "target")}{(fault == Fault.StallTarget ? $", for {stallMs} ms" : "")}, {how} (VMM_FAULT_SEEDS={seed}:1 repeats it)");

        var g = Guest(ticks: 120);
        string socket = Path.Combine(_directory, "src.sock");
        string image = Path.Combine(_directory, "disk.img"), targetDisks = Directory.CreateDirectory(Path.Combine(_directory, "target-disks")).FullName;
        if (transport == Transport.CopyDisksOntoAFullDisk)
        {
            // Half the image's 4 MiB of data fits.
            HostCommand.Checked("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", targetDisks);
            _mounted = targetDisks;
        }
        if (copiesDisk)
            DiskImageFiles.CreateSparse(image, 16 << 20, (1L << 20, Devices.Virtio.VirtioBlockHarness.Pattern(2 << 20, seed)),
                (8L << 20, Devices.Virtio.VirtioBlockHarness.Pattern(2 << 20, seed + 1)));
        var (target, listen) = copiesDisk ? StartTarget(once: false, extra: ["--disk-dir", targetDisks]) : StartTarget(once: false);
        var source = copiesDisk ? StartSource(g, socket, extra: ["--disk", image]) : StartSource(g, socket);
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
        string[] travel = transport switch
        {
            Transport.CopyDisks or Transport.CopyDisksOntoAFullDisk => ["--copy-disks"],
            Transport.Connections => ["--connections", connections.ToString()],
            _ => [],
        };
        using (var ctl = Migrate(socket, proxy.Address, ["--force", .. travel]))
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
        // A disk that cannot hold the copy ends the migration before the target can answer Prepared.
        if (transport == Transport.CopyDisksOntoAFullDisk) Assert.False(ranOnTarget, "the VM went to a target that could not hold its disk");
        if (copiesDisk) AssertTheDiskCopyGoesWithTheVm(image, targetDisks, target, ranOnTarget, targetKilled);
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

    /// <summary>How many DiskData frames the copied image makes (its 4 MiB of data, 1 MiB a frame).</summary>
    private const int DiskDataFrames = 4;

    /// <summary>An image copy is named in the target's directory only once it is whole and durable, before the target
    /// answers Prepared: where the VM may run on the target, it is there, the source's byte for byte; where the migration
    /// failed before that, nothing is (not even a killed target's half copy); a target killed between the two may leave
    /// the whole copy, never a part of one.</summary>
    private static void AssertTheDiskCopyGoesWithTheVm(string image, string targetDisks, RunningVmm target, bool ranOnTarget, bool targetKilled)
    {
        if (!ranOnTarget && !targetKilled)
        {
            // The target gives a failed migration up when it notices; only then is there nothing to find.
            Assert.True(target.WaitFor((_, log) => log.Contains("failed and was discarded"), Patience), target.ToString());
            Assert.Empty(Directory.GetFileSystemEntries(targetDisks));
            return;
        }
        var left = Directory.GetFileSystemEntries(targetDisks);
        if (ranOnTarget) Assert.Single(left);
        foreach (string copy in left) Assert.True(File.ReadAllBytes(image).AsSpan().SequenceEqual(File.ReadAllBytes(copy)), $"{copy} is not the source's image");
    }

    /// <summary>The daemon runs no VM any more, and holds no migration half taken in.</summary>
    private void AssertNothingLeftOnTheTarget(RunningVmm target)
    {
        Assert.True(target.WaitFor((_, log) => !log.Contains("the source committed") || log.Contains("migration 1: VM stopped"), Patience), target.ToString());
        Assert.DoesNotContain("internal error", target.Log);
    }
}
