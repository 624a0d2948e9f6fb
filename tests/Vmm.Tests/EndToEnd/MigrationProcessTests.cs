using System.Net;
using System.Net.Sockets;
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
/// sequence a guest that never moved prints: no tick lost or repeated, the checks passed, the success exit.</summary>
public sealed class MigrationProcessTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-migp-").FullName;
    private readonly List<string> _namespaces = [];

    public void Dispose()
    {
        foreach (string ns in _namespaces) HostCommand.Run("ip", "netns", "del", ns);
        Directory.Delete(_directory, recursive: true);
    }

    // 8 s of ticks: the migration must start and end while the guest runs, even when the whole suite
    // loads the two cores and a `vmm ctl` under the JIT takes a second or more to start.
    private static DirtyingGuestOptions Guest(int regionMiB = 64, double dirtyMiBPerSecond = 100, int ticks = 80) =>
        new(regionMiB, dirtyMiBPerSecond, GuestTsc.Khz, TickMs: 100, Ticks: ticks, FillRandomFirst: true);

    private static string ExpectedConsole(DirtyingGuestOptions g) =>
        "ready\n" + string.Concat(Enumerable.Range(1, g.Ticks).Select(t => $"tick {t:x8}\n")) + $"done {(ulong)(g.Ticks * g.PagesPerTick):x16}\n";

    private static readonly int GuestSuccess = ExitCodes.FromExitPort(FirmwareGuests.ExitValueSuccess);

    private RunningVmm StartSource(DirtyingGuestOptions g, string socket, IReadOnlyList<string>? wrapper = null, bool dirtyRing = false)
    {
        string kernel = Path.Combine(_directory, "dirty.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.DirtyMemoryWithChecksum(g));
        ulong memoryMiB = (FirmwareGuests.DirtyingRegionAddress >> 20) + (ulong)g.RegionMiB + 16;
        var source = new RunningVmm(["run", "-v", "--kernel", kernel, "--memory", $"{memoryMiB}M", "--api-socket", socket, .. dirtyRing ? ["--dirty-ring"] : Array.Empty<string>()], wrapper);
        Assert.True(source.WaitForConsole("tick 00000003", Patience), $"the source guest did not start ticking\n{source}");
        return source;
    }

    private static int FreePort()
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return port;
    }

    private static RunningVmm StartTarget(string listen, IReadOnlyList<string>? wrapper = null, bool once = true)
    {
        var target = new RunningVmm(["migrate-receive", "-v", "--listen", listen, .. once ? ["--once"] : Array.Empty<string>()], wrapper);
        Assert.True(target.WaitFor((_, log) => log.Contains("waiting for migrations"), Patience), $"the target did not listen\n{target}");
        return target;
    }

    private static RunningVmm Migrate(string socket, string to, params string[] extra) =>
        new(["ctl", "--socket", socket, "migrate", "--to", to, .. extra]);

    /// <summary>The migration request failed with <paramref name="reason"/>, and the guest never left: the
    /// source ran it to its successful end, every tick in order, all checks passed.</summary>
    private static void AssertFailedAndTheGuestRanOnHere(DirtyingGuestOptions g, int? ctlExit, RunningVmm ctl, string reason, int? sourceExit, RunningVmm source)
    {
        Assert.Equal(1, ctlExit);
        Assert.Contains(reason, ctl.Console);
        Assert.Equal(GuestSuccess, sourceExit);
        Assert.Equal(ExpectedConsole(g), source.Console);
    }

    private void Show(string name, RunningVmm process) => output.WriteLine($"--- {name} ---\n{process}");

    /// <summary>Waits for the migration request, then the source, then (unless told not to) the target to
    /// exit, writes what each printed to the test output, and returns their exit codes.</summary>
    private (int? Ctl, int? Source, int? Target) WaitForAll(RunningVmm ctl, RunningVmm source, RunningVmm? target, bool targetToo = true)
    {
        int? ctlExit = ctl.WaitForExit(Patience);
        int? sourceExit = source.WaitForExit(Patience);
        int? targetExit = target is not null && targetToo ? target.WaitForExit(Patience) : null;
        Show("ctl", ctl);
        Show("source", source);
        if (target is not null) Show("target", target);
        return (ctlExit, sourceExit, targetExit);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Loopback_GuestKeepsTickingOnTheTargetWithEveryPageIntact(bool dirtyRing)
    {
        // 300 MiB/s over a 64 MiB region: with the dirty ring, vCPUs also hit full rings between harvests.
        var g = Guest(dirtyMiBPerSecond: 300);
        string socket = Path.Combine(_directory, "src.sock");
        string listen = $"127.0.0.1:{FreePort()}";
        using var target = StartTarget(listen);
        using var source = StartSource(g, socket, dirtyRing: dirtyRing);
        using var ctl = Migrate(socket, listen);
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
        // 256 MiB written at up to 1 GiB/s: more pages per pass than a vCPU's 64 Ki-entry ring holds, so the
        // vCPU must stop on KVM_EXIT_DIRTY_RING_FULL and harvest; no page may be lost on the way.
        var g = Guest(regionMiB: 256, dirtyMiBPerSecond: 1024);
        string socket = Path.Combine(_directory, "src.sock");
        string listen = $"127.0.0.1:{FreePort()}";
        using var target = StartTarget(listen);
        using var source = StartSource(g, socket, dirtyRing: true);
        using var ctl = Migrate(socket, listen, "--downtime-ms", "50", "--auto-converge", "--force");
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
        using var target = StartTarget("10.231.0.2:7700", ["ip", "netns", "exec", b]);
        using var source = StartSource(g, socket, ["ip", "netns", "exec", a]);
        using var ctl = Migrate(socket, "10.231.0.2:7700");
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
        string listen = $"127.0.0.1:{FreePort()}";
        using var target = new RunningVmm(["migrate-receive", "--listen", listen, "--once", "--disk-dir", elsewhere]);
        Assert.True(target.WaitFor((_, log) => log.Contains("waiting for migrations"), Patience), target.ToString());
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
        // A 256 MiB region written faster than loopback carries it (and than a tracked guest can write here,
        // ~1.5 GB/s), with no downtime allowed: the dirty set never empties, so passes go on until the target dies.
        var g = Guest(regionMiB: 256, dirtyMiBPerSecond: 4096, ticks: 80);
        string socket = Path.Combine(_directory, "src.sock");
        string listen = $"127.0.0.1:{FreePort()}";
        using var target = StartTarget(listen);
        using var source = StartSource(g, socket);
        using var ctl = Migrate(socket, listen, "--downtime-ms", "0", "--max-passes", "100000");
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
        string listen = $"127.0.0.1:{FreePort()}";
        using var target = StartTarget(listen, once: false);
        using var source = StartSource(g, socket);
        using var ctl = Migrate(socket, listen);
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
        int port = FreePort();
        using var target = StartTarget($"127.0.0.1:{port}", once: false);
        using var source = StartSource(g, socket);
        using (var proxy = new TcpFaultProxy(port, afterBytes: 3 << 20, fault))
        using (var damaged = Migrate(socket, $"127.0.0.1:{proxy.Port}"))
        {
            Assert.Equal(1, damaged.WaitForExit(Patience));
            Show("damaged ctl", damaged);
            Assert.Contains("keeps running here", damaged.Console);
        }
        Assert.True(target.WaitFor((_, log) => log.Contains("failed and was discarded"), Patience), $"the target kept a damaged VM\n{target}");

        using var clean = Migrate(socket, $"127.0.0.1:{port}");
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
        var g = Guest(regionMiB: 128, dirtyMiBPerSecond: 800);
        string socket = Path.Combine(_directory, "src.sock");
        string listen = $"127.0.0.1:{FreePort()}";
        using var target = StartTarget(listen, once: false);
        using var source = StartSource(g, socket);
        using (var refused = Migrate(socket, listen, "--downtime-ms", "0", "--max-passes", "3"))
        {
            Assert.Equal(1, refused.WaitForExit(Patience));
            Show("refused ctl", refused);
            Assert.Contains("did not converge within 3 passes", refused.Console);
        }
        // 1 ms allows a few hundred pages at the last copy: without slowing the guest down that cannot be reached.
        using var converged = Migrate(socket, listen, "--downtime-ms", "1", "--auto-converge", "--max-passes", "60", "--force");
        int? convergedExit = converged.WaitForExit(Patience);
        int? sourceExit = source.WaitForExit(Patience);
        Assert.True(target.WaitFor((_, log) => log.Contains("migration 2: VM stopped"), Patience), $"the VM did not finish on the target\n{target}");
        Show("converged ctl", converged); Show("source", source); Show("target", target);

        Assert.Equal(0, convergedExit);
        Assert.Contains("\"throttlePercent\":20", converged.Console);
        Assert.Equal(0, sourceExit);
        Assert.Contains($"(exit code {GuestSuccess})", target.Log);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
    }
}
