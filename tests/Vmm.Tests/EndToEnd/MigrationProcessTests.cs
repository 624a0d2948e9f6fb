using System.Text.RegularExpressions;
using Vmm.Firmware;
using Vmm.Migration;
using Vmm.Tests.Integration;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>Live migration between two `vmm` processes, with the memory-dirtying guest: it prints "tick N"
/// every 100 ms while it writes pages at a set rate and checks a running checksum of them, and at the end
/// checks every byte of its region. The console of the source followed by the target's must be the exact
/// sequence a guest that never moved prints: no tick lost or repeated, the checks passed, the success exit.
/// Where a test needs the guest to write a certain amount between two looks at its dirty pages, a
/// <see cref="GatedMigrationProxy"/> holds the target's answers until the guest's ticks show it did: nothing
/// depends on how fast this host runs the guest or carries the stream. A migration meant to succeed is
/// given --force, so how many passes convergence takes here does not matter either.</summary>
[Trait("Category", "Process")]
public sealed class MigrationProcessTests(ITestOutputHelper output) : MigrationProcessTestBase(output)
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Loopback_GuestKeepsTickingOnTheTargetWithEveryPageIntact(bool dirtyRing)
    {
        // 300 MiB/s over a 64 MiB region: with the dirty ring, vCPUs also hit full rings between harvests.
        var g = Guest(dirtyMiBPerSecond: 300);
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget();
        using var _ = target;
        using var source = StartSource(g, socket, dirtyRing: dirtyRing);
        using var ctl = Migrate(socket, listen, "--force");
        var (ctlExit, sourceExit, targetExit) = WaitForAll(ctl, source, target);

        Assert.Equal(0, ctlExit);
        Assert.Contains("\"event\":\"pass\"", ctl.Console);
        Assert.Contains("\"state\":\"migrated\"", ctl.Console);
        Assert.Equal(0, sourceExit);
        Assert.Contains("the VM now runs on", source.Log);
        Assert.Equal(GuestSuccess, targetExit);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
        Assert.DoesNotContain("ready", target.Console);
    }

    [Fact]
    public void DirtyRing_FullRingsAreHarvestedWhileTheGuestKeepsWriting()
    {
        // A 1024-entry ring, and the first pass held open until the guest has printed two more ticks, each of
        // 2560 different pages: more than the ring holds between two harvests, so the vCPU must stop on
        // KVM_EXIT_DIRTY_RING_FULL and have its ring harvested; no page may be lost on the way.
        var g = Guest(dirtyMiBPerSecond: 100);
        Assert.True(g.PagesPerTick * 2 > 1024);
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget();
        using var _ = target;
        using var source = StartSource(g, socket, wrapper: null, dirtyRing: true, "--dirty-ring-entries", "1024");
        using var proxy = new GatedMigrationProxy(PortOf(listen), (answer, pass) =>
        {
            if (answer == Vmm.Migration.MigrationFrameType.PassDone && pass == 1) WaitForMoreTicks(source, 2);
        });
        using var ctl = Migrate(socket, proxy.Address, "--force");
        var (ctlExit, sourceExit, targetExit) = WaitForAll(ctl, source, target);

        Assert.Equal(0, ctlExit);
        Assert.Equal(0, sourceExit);
        Assert.Matches(@"dirty ring full [1-9]\d* times", source.Log);
        Assert.Equal(GuestSuccess, targetExit);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
    }

    [Fact]
    public void BetweenNetworkNamespaces_GuestKeepsTickingOnTheTarget()
    {
        string a = $"vmm-mig-a-{Environment.ProcessId}", b = $"vmm-mig-b-{Environment.ProcessId}";
        string vethA = $"vma{Environment.ProcessId % 100000}", vethB = $"vmb{Environment.ProcessId % 100000}";
        foreach (string ns in new[] { a, b })
        {
            HostCommand.Checked("ip", "netns", "add", ns);
            _namespaces.Add(ns);
            HostCommand.Checked("ip", "-n", ns, "link", "set", "lo", "up");
        }
        HostCommand.Checked("ip", "link", "add", vethA, "netns", a, "type", "veth", "peer", "name", vethB, "netns", b);
        HostCommand.Checked("ip", "-n", a, "addr", "add", "10.231.0.1/24", "dev", vethA);
        HostCommand.Checked("ip", "-n", b, "addr", "add", "10.231.0.2/24", "dev", vethB);
        HostCommand.Checked("ip", "-n", a, "link", "set", vethA, "up");
        HostCommand.Checked("ip", "-n", b, "link", "set", vethB, "up");

        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        // Plain TCP across hosts needs --insecure; MigrationTlsProcessTests covers TLS.
        var (target, _) = StartTarget("10.231.0.2:7700", ["ip", "netns", "exec", b], extra: ["--insecure"]);
        using var __ = target;
        using var source = StartSource(g, socket, ["ip", "netns", "exec", a]);
        using var ctl = Migrate(socket, "10.231.0.2:7700", "--force");
        var (ctlExit, sourceExit, targetExit) = WaitForAll(ctl, source, target);

        Assert.Equal(0, ctlExit);
        Assert.Equal(0, sourceExit);
        Assert.Equal(GuestSuccess, targetExit);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
    }

    [Fact]
    public void DiskOutsideTheTargetsDiskDirectories_IsRefusedAndTheVmStaysHere()
    {
        // The stream names the disk paths: a target must not open whatever file a sender names.
        var g = Guest();
        string kernel = Path.Combine(_directory, "dirty.elf"), disk = Path.Combine(_directory, "disk.img"), socket = Path.Combine(_directory, "src.sock");
        File.WriteAllBytes(kernel, FirmwareGuests.DirtyMemoryWithChecksum(g));
        File.WriteAllBytes(disk, new byte[1 << 20]);
        string elsewhere = Directory.CreateDirectory(Path.Combine(_directory, "elsewhere")).FullName;
        var (target, listen) = StartTarget(extra: ["--disk-dir", elsewhere]);
        using var _ = target;
        using var source = new RunningVmm(["run", "--kernel", kernel, "--memory", "96M", "--disk", disk, "--api-socket", socket]);
        Assert.True(source.WaitForConsole("tick 00000003", Patience), source.ToString());

        using var ctl = Migrate(socket, listen);
        var (ctlExit, sourceExit, _) = WaitForAll(ctl, source, target, targetToo: false);

        AssertFailedAndTheGuestRanOnHere(g, ctlExit, ctl, $"disk {disk} is outside the directories this target serves", sourceExit, source);
        Assert.Equal(ExitCodes.VmmError, target.WaitForExit(Patience));
    }

    [Fact]
    public void TargetKilledMidPass_SourceKeepsRunningAndTheGuestStaysCorrect()
    {
        // No downtime allowed, and every pass held open until the guest has printed another tick (and so written
        // more pages): the dirty set never empties, so passes go on until the target dies.
        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget();
        using var _ = target;
        using var source = StartSource(g, socket);
        using var proxy = new GatedMigrationProxy(PortOf(listen), (answer, _) =>
        {
            if (answer == Vmm.Migration.MigrationFrameType.PassDone) WaitForMoreTicks(source, 1);
        });
        using var ctl = Migrate(socket, proxy.Address, "--downtime-ms", "0", "--max-passes", "100000");
        Assert.True(ctl.WaitForConsole("\"pass\":2", Patience), $"no second pass\n{ctl}");
        target.Kill();
        var (ctlExit, sourceExit, _) = WaitForAll(ctl, source, target: null);

        AssertFailedAndTheGuestRanOnHere(g, ctlExit, ctl, "keeps running here", sourceExit, source);
    }

    [Fact]
    public void WhileMigrating_StatusSaysSoAndResumeIsRefused_ThenAHungTargetIsGivenUp()
    {
        // The guest outlives the 8 s limit, so the source is still there to give up and go on.
        var g = Guest(ticks: 160);
        string socket = Path.Combine(_directory, "src.sock");
        using var hung = new StallingMigrationTarget(stallAfterPass: 1);
        using var source = StartSource(g, socket);
        using var ctl = Migrate(socket, hung.Address, "--timeout-s", "8");
        Assert.True(hung.WaitUntilStalled(Patience), $"the first pass never arrived\n{ctl}");

        using (var status = new RunningVmm(["ctl", "--socket", socket, "status"]))
        {
            Assert.True(status.WaitForExit(Patience) == 0, status.ToString());
            Assert.Contains("\"state\":\"migrating\"", status.Console);
        }
        // A resume during a stop-and-copy would let the VM run here while its state goes there.
        using (var resume = new RunningVmm(["ctl", "--socket", socket, "resume"]))
        {
            Assert.True(resume.WaitForExit(Patience) == 1, resume.ToString());
            Assert.Contains("a migration is running", resume.Console);
        }
        var (ctlExit, sourceExit, _) = WaitForAll(ctl, source, target: null);

        AssertFailedAndTheGuestRanOnHere(g, ctlExit, ctl, "timed out after 8 s", sourceExit, source);
    }

    [Fact]
    public void Daemon_StopsTheVmsItRunsOnSigterm()
    {
        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(once: false);
        using var _ = target;
        using var source = StartSource(g, socket);
        using var ctl = Migrate(socket, listen, "--force");
        Assert.Equal(0, ctl.WaitForExit(Patience));
        Assert.True(target.WaitForConsole("tick", Patience), target.ToString());

        target.Terminate();
        int? targetExit = target.WaitForExit(Patience);
        Show("target", target);

        Assert.Equal(ExitCodes.Signal(15), targetExit);
        Assert.Contains("migration 1: VM stopped: stopped by SIGTERM", target.Log);
    }

    [Theory]
    [InlineData(TcpFaultProxy.Fault.FlipBit)]
    [InlineData(TcpFaultProxy.Fault.Truncate)]
    public void DamagedStream_IsDiscardedByTheTarget_ThenTheSameDaemonTakesTheVmCleanly(TcpFaultProxy.Fault fault)
    {
        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(once: false);
        using var _ = target;
        using var source = StartSource(g, socket);
        using (var proxy = new TcpFaultProxy(PortOf(listen), afterBytes: 3 << 20, fault))
        using (var damaged = Migrate(socket, $"127.0.0.1:{proxy.Port}"))
        {
            Assert.Equal(1, damaged.WaitForExit(Patience));
            Show("damaged ctl", damaged);
            Assert.Contains("keeps running here", damaged.Console);
        }
        Assert.True(target.WaitFor((_, log) => log.Contains("failed and was discarded"), Patience), $"the target kept a damaged VM\n{target}");

        using var clean = Migrate(socket, listen, "--force");
        int? cleanExit = clean.WaitForExit(Patience);
        int? sourceExit = source.WaitForExit(Patience);
        Assert.True(target.WaitFor((_, log) => log.Contains("migration 2: VM stopped"), Patience), $"the second VM did not finish on the target\n{target}");
        Show("clean ctl", clean); Show("source", source); Show("target", target);

        Assert.Equal(0, cleanExit);
        Assert.Equal(0, sourceExit);
        Assert.Contains($"(exit code {GuestSuccess})", target.Log);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
    }

    [Fact]
    public void TargetThatNeverConfirms_SourceResumesAtTheTimeoutAndTheGuestStaysCorrect()
    {
        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        using var silentTarget = new StallingMigrationTarget(stallAfterPass: null);
        using var source = StartSource(g, socket);
        using var ctl = Migrate(socket, silentTarget.Address, "--timeout-s", "5");
        var (ctlExit, sourceExit, _) = WaitForAll(ctl, source, target: null);

        AssertFailedAndTheGuestRanOnHere(g, ctlExit, ctl, "timed out after 5 s", sourceExit, source);
    }

    [Fact]
    public void NoConvergence_FailsAtThePassLimitWithoutForce_AndSucceedsWithAutoConverge()
    {
        // 4 MiB is 1024 pages and every tick writes 2560 of them, so each tick rewrites the whole region. Every
        // pass is held open until the guest has printed two more ticks: whatever this host's speed, every pass
        // finds the whole region dirty again. So no pass shrinks the dirty set (auto-converge must step in), and
        // no downtime of 0 ms can ever be met.
        var g = Guest(regionMiB: 4, dirtyMiBPerSecond: 100, ticks: 150);
        Assert.True(g.PagesPerTick > g.PageCount);
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(once: false);
        using var _ = target;
        using var source = StartSource(g, socket);
        void TwoTicksPerPass(Vmm.Migration.MigrationFrameType answer, int pass)
        {
            if (answer == Vmm.Migration.MigrationFrameType.PassDone) WaitForMoreTicks(source, 2);
        }
        using (var proxy = new GatedMigrationProxy(PortOf(listen), TwoTicksPerPass))
        using (var refused = Migrate(socket, proxy.Address, "--downtime-ms", "0", "--max-passes", "3"))
        {
            Assert.Equal(1, refused.WaitForExit(Patience));
            Show("refused ctl", refused);
            Assert.Contains("did not converge within 3 passes", refused.Console);
        }
        using var convergingProxy = new GatedMigrationProxy(PortOf(listen), TwoTicksPerPass);
        using var converged = Migrate(socket, convergingProxy.Address, "--downtime-ms", "0", "--auto-converge", "--max-passes", "5", "--force");
        int? convergedExit = converged.WaitForExit(Patience);
        int? sourceExit = source.WaitForExit(Patience);
        Assert.True(target.WaitFor((_, log) => log.Contains("migration 2: VM stopped"), Patience), $"the VM did not finish on the target\n{target}");
        Show("converged ctl", converged); Show("source", source); Show("target", target);

        Assert.Equal(0, convergedExit);
        // Pass 2 did not shrink the dirty set of pass 1 by a tenth: pass 3 runs throttled at 20%, pass 4 at 30%.
        Assert.Matches("\"pass\":3,[^\n]*\"throttlePercent\":20", converged.Console);
        Assert.Matches("\"pass\":4,[^\n]*\"throttlePercent\":30", converged.Console);
        Assert.Equal(0, sourceExit);
        Assert.Contains($"(exit code {GuestSuccess})", target.Log);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
    }
}
