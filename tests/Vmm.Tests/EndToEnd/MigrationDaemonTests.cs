using System.Text.RegularExpressions;
using System.Net.Sockets;
using Vmm.Devices.Virtio;
using Vmm.Migration;
using Vmm.Serialization;
using Vmm.State;
using Vmm.Tests.Integration;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>`vmm migrate-receive` facing several peers: a hostile Hello, a connection that says nothing, two
/// migrations at once, more than it takes. Each incoming migration is its own unit: whatever one does, the
/// daemon keeps serving the others.</summary>
[Trait("Category", "Process")]
public sealed class MigrationDaemonTests(ITestOutputHelper output) : MigrationProcessTestBase(output)
{
    /// <summary>A peer the test plays by hand, speaking the migration protocol.</summary>
    private sealed class HandPlayedSource : IDisposable
    {
        private readonly Socket _socket = new(SocketType.Stream, ProtocolType.Tcp);
        private readonly NetworkStream _stream;

        public HandPlayedSource(string address)
        {
            _socket.Connect(System.Net.IPAddress.Loopback, PortOf(address));
            _socket.ReceiveTimeout = (int)Patience.TotalMilliseconds;
            _stream = new NetworkStream(_socket);
            Channel = new MigrationChannel(_stream);
        }

        public MigrationChannel Channel { get; }

        public void SendHello(MachineDescription description)
        {
            Channel.Send(MigrationFrameType.Hello, new MigrationHello("daemon-test", description, null).ToBytes());
        }

        public (MigrationFrameType Type, string Text) ReceiveAnswer()
        {
            byte[] buffer = new byte[4096];
            var (type, payload) = Channel.Receive(ref buffer);
            return (type, System.Text.Encoding.UTF8.GetString(payload.Span));
        }

        /// <summary>True once the daemon has closed the connection (or reset it).</summary>
        public bool ClosedByTheDaemon()
        {
            try
            {
                return _socket.Receive(new byte[1]) == 0;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                return true;
            }
        }

        public void Dispose()
        {
            _stream.Dispose();
            _socket.Dispose();
        }
    }

    /// <summary>A real migration of the dirtying guest into <paramref name="listen"/>, which must succeed; the
    /// target runs the rest of the guest (checked through its log, the daemon staying up).</summary>
    private void MigrateAGuestCleanly(RunningVmm target, string listen, int migrationNumber)
    {
        var g = Guest();
        string socket = Path.Combine(_directory, $"src{migrationNumber}.sock");
        using var source = StartSource(g, socket);
        using var ctl = Migrate(socket, listen, "--force");
        int? ctlExit = ctl.WaitForExit(Patience);
        int? sourceExit = source.WaitForExit(Patience);
        Assert.True(target.WaitFor((_, log) => log.Contains($"migration {migrationNumber}: VM stopped"), Patience), $"the VM did not finish on the target\n{target}");
        Show("ctl", ctl);
        Show("source", source);
        Show("target", target);
        Assert.Equal(0, ctlExit);
        Assert.Equal(0, sourceExit);
        Assert.Contains($"migration {migrationNumber}: VM stopped: guest wrote 0x10 to the exit port (exit code {GuestSuccess})", target.Log);
        Assert.Equal(ExpectedConsole(g), source.Console + ConsoleOfMigration(target, migrationNumber));
    }

    /// <summary>The daemons here write each received guest's console to its own file.</summary>
    private string ConsoleOfMigration(RunningVmm target, int n) => File.ReadAllText(Path.Combine(_directory, $"console-{n}.txt"));

    private (RunningVmm Target, string Address) StartDaemon(params string[] extra) =>
        StartTarget(once: false, extra: ["--serial-log", Path.Combine(_directory, "console-{n}.txt"), .. extra]);

    [Fact]
    public void AHelloNamingADiskPathWithANul_IsRefusedAndTheDaemonTakesTheNextVm()
    {
        var (target, listen) = StartDaemon("--disk-dir", _directory);
        using var _ = target;
        using (var hostile = new HandPlayedSource(listen))
        {
            hostile.SendHello(new MachineDescription(64UL << 20, 1, [new BlockDiskConfig(Path.Combine(_directory, "disk\0.img"), false, null)], []));
            var (type, text) = hostile.ReceiveAnswer();
            Assert.Equal(MigrationFrameType.Error, type);
            Assert.Contains("disk path: contains the control character U+0000", text);
        }
        Assert.True(target.WaitFor((_, log) => log.Contains("migration 1 from") && log.Contains("failed and was discarded"), Patience), target.ToString());

        MigrateAGuestCleanly(target, listen, migrationNumber: 2);
    }

    [Fact]
    public void AHelloShowingAFeatureThisHostsKvmLacks_IsRefusedBeforeAnythingIsBuilt()
    {
        var (target, listen) = StartDaemon();
        using var _ = target;
        var shown = FeatureThisHostLacks.Offered();
        FeatureThisHostLacks.ShowIn(shown);
        using (var source = new HandPlayedSource(listen))
        {
            source.SendHello(new MachineDescription(64UL << 20, 1, [], []) { VcpuCpuid = [shown] });
            var (type, text) = source.ReceiveAnswer();
            Assert.Equal(MigrationFrameType.Error, type);
            Assert.Equal($"this host's KVM cannot give the guest the CPU it was shown: {FeatureThisHostLacks.Feature}", text);
        }
        Assert.True(target.WaitFor((_, log) => log.Contains("migration 1 from") && log.Contains("failed and was discarded: this host's KVM cannot give"), Patience), target.ToString());
        Assert.DoesNotContain("the VM runs here", target.Log);
    }

    [Fact]
    public void AConnectionThatSaysNothing_HoldsNoOneUpAndIsDroppedAtTheHelloDeadline()
    {
        var (target, listen) = StartDaemon();
        using var _ = target;
        using var silent = new HandPlayedSource(listen);
        Assert.True(target.WaitFor((_, log) => log.Contains("migration 1: connection from"), Patience), target.ToString());

        MigrateAGuestCleanly(target, listen, migrationNumber: 2);

        Assert.True(silent.ClosedByTheDaemon());
        Assert.True(target.WaitFor((_, log) => log.Contains("failed and was discarded: no valid Hello within 5 s"), Patience), target.ToString());
    }

    [Fact]
    public void TwoMigrationsAtOnce_BothArrive()
    {
        var (target, listen) = StartDaemon();
        using var _ = target;
        var g = Guest();
        string socketA = Path.Combine(_directory, "a.sock"), socketB = Path.Combine(_directory, "b.sock");
        using var sourceA = StartSource(g, socketA);
        using var sourceB = StartSource(g, socketB);
        // Each first pass is held until both migrations have reached it: one daemon taking them in turn could not.
        using var bothInPass1 = new CountdownEvent(2);
        void Together(MigrationFrameType answer, int pass)
        {
            if (answer != MigrationFrameType.PassDone || pass != 1) return;
            bothInPass1.Signal();
            Assert.True(bothInPass1.Wait(Patience), "the other migration never reached its first pass");
        }
        using var proxyA = new GatedMigrationProxy(PortOf(listen), Together);
        using var proxyB = new GatedMigrationProxy(PortOf(listen), Together);
        using var ctlA = Migrate(socketA, proxyA.Address, "--force");
        using var ctlB = Migrate(socketB, proxyB.Address, "--force");

        int? exitA = ctlA.WaitForExit(Patience), exitB = ctlB.WaitForExit(Patience);
        Assert.True(target.WaitFor((_, log) => log.Contains("migration 1: VM stopped") && log.Contains("migration 2: VM stopped"), Patience), target.ToString());
        Show("ctl A", ctlA); Show("ctl B", ctlB); Show("source A", sourceA); Show("source B", sourceB); Show("target", target);

        Assert.Equal(0, exitA);
        Assert.Equal(0, exitB);
        Assert.Equal(0, sourceA.WaitForExit(Patience));
        Assert.Equal(0, sourceB.WaitForExit(Patience));
        // Which VM got which number depends on which connection came first; each console continues one source's.
        string[] received = [ConsoleOfMigration(target, 1), ConsoleOfMigration(target, 2)];
        Assert.True(
            (sourceA.Console + received[0] == ExpectedConsole(g) && sourceB.Console + received[1] == ExpectedConsole(g)) ||
            (sourceA.Console + received[1] == ExpectedConsole(g) && sourceB.Console + received[0] == ExpectedConsole(g)),
            "each guest must continue on the target exactly where it left its source");
    }

    [Fact]
    public void BeyondMaxIncoming_TheSourceIsToldTheTargetIsBusyAndKeepsItsVm()
    {
        var (target, listen) = StartDaemon("--max-incoming", "1");
        using var _ = target;
        // A peer past its Hello holds the only slot while the daemon waits for its pages.
        using var first = new HandPlayedSource(listen);
        first.SendHello(new MachineDescription(16UL << 20, 1, [], []));
        Assert.Equal(MigrationFrameType.Ready, first.ReceiveAnswer().Type);

        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        using var source = StartSource(g, socket);
        using var ctl = Migrate(socket, listen);
        var (ctlExit, sourceExit, _) = WaitForAll(ctl, source, target, targetToo: false);

        AssertFailedAndTheGuestRanOnHere(g, ctlExit, ctl, "the target is busy: 1 migrations are already coming in", sourceExit, source);
        Assert.Contains("refused: 1 migrations are already coming in (--max-incoming)", target.Log);
    }

    [Fact]
    public void VmsAreKnownByTheirNames_OneOfEachName_ListedByTheDaemon_AndTheirSocketsNamedAfterThem()
    {
        string daemonSocket = Path.Combine(_directory, "daemon.sock");
        // Paused on arrival, so every VM is certainly still there when the daemon is asked.
        var (target, listen) = StartTarget(once: false, extra: ["--paused", "--control-socket", daemonSocket,
            "--api-socket", Path.Combine(_directory, "vm-{name}.sock"), "--serial-log", Path.Combine(_directory, "console-{name}.txt")]);
        using var _ = target;
        var g = Guest();
        var sources = new Dictionary<string, RunningVmm>();
        foreach (string name in new[] { "alpha", "beta" })
        {
            string socket = Path.Combine(_directory, $"src-{name}.sock");
            sources[name] = StartSource(g, socket, extra: ["--name", name]);
            using var ctl = Migrate(socket, listen, "--force");
            Assert.Equal(0, ctl.WaitForExit(Patience));
            Assert.Equal(0, sources[name].WaitForExit(Patience));
        }
        // A second VM named alpha is refused while the first runs here, and stays where it is.
        string twinSocket = Path.Combine(_directory, "src-twin.sock");
        using var twin = StartSource(g, twinSocket, extra: ["--name", "alpha"]);
        using var refused = Migrate(twinSocket, listen);
        var (refusedExit, twinExit, _) = WaitForAll(refused, twin, target, targetToo: false);
        AssertFailedAndTheGuestRanOnHere(g, refusedExit, refused, "a VM named alpha is here already", twinExit, twin);

        using var list = new RunningVmm(["ctl", "--socket", daemonSocket, "list"]);
        Assert.Equal(0, list.WaitForExit(Patience));
        using var status = new RunningVmm(["ctl", "--socket", Path.Combine(_directory, "vm-beta.sock"), "status"]);
        Assert.Equal(0, status.WaitForExit(Patience));
        Show("list", list);
        Assert.Matches("\"name\":\"alpha\".*\"state\":\"paused\".*\"name\":\"beta\"|\"name\":\"beta\".*\"name\":\"alpha\"", list.Console);
        Assert.Contains("\"name\":\"beta\"", status.Console);

        foreach (string name in sources.Keys)
        {
            using var resume = new RunningVmm(["ctl", "--socket", Path.Combine(_directory, $"vm-{name}.sock"), "resume"]);
            Assert.Equal(0, resume.WaitForExit(Patience));
        }
        Assert.True(target.WaitFor((_, log) => Regex.Matches(log, "VM stopped: guest wrote 0x10").Count == 2, Patience), target.ToString());
        foreach (var (name, source) in sources)
            Assert.Equal(ExpectedConsole(g), source.Console + File.ReadAllText(Path.Combine(_directory, $"console-{name}.txt")));
    }
}
