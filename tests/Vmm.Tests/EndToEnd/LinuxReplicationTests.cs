using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>High availability with a real Linux guest (issue 10, test b). The guest-images kernel boots from an ext4
/// root on virtio-blk with netconsole to the host over a TAP; early in its boot it is replicated to a <c>vmm standby</c>
/// on the same host (in the same network namespace, so the standby can take over the TAP), through a relay. Once
/// netconsole sends, the test waits for a moment when some of the guest's output is held (its epoch not committed),
/// freezes the relay so that no epoch commits any more, and kills the running primary with SIGKILL: the kill always
/// finds output held, after lines went out on the console and over netconsole, and before the mount (rootdelay makes
/// the kernel sleep 10 s first).
/// The standby fences (kills and waits out) the primary and resumes the last committed epoch. Then the kernel must
/// mount its root and start init on the standby; the kernel timestamps the host received, on the console and over
/// netconsole, primary then standby, must never go backwards, and no line may reach the host twice (output commit:
/// nothing left the primary that the resumed guest does again); and the standby's disk image must pass
/// <c>e2fsck -n</c>. init is /bin/spin (no system call), so the same runs where guest user space cannot enter the
/// kernel (nested kvm_pvm).</summary>
[Trait("Category", "LinuxBoot")]
[Collection(LinuxGuests.Collection)]
public sealed partial class LinuxReplicationTests(ITestOutputHelper output) : IDisposable
{
    private const int NetconsolePort = 6666, LinkPort = 7100, RootDelayS = 10;
    /// <summary>Printed once netconsole sends; a few more lines follow before the rootdelay sleep.</summary>
    private const string TriggerLine = "netconsole: network logging started";
    private const string MountedLine = "EXT4-fs (vda): mounted filesystem", InitLine = "Run /bin/spin as init process";
    private static readonly string SleepLine = $"Waiting {RootDelayS} sec before mounting root device";
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(90), BootPatience = TimeSpan.FromMinutes(15);
    /// <summary>Long enough, on a busy host, for a commit already on its way to arrive and for the next epoch to be
    /// sealed, and short of the standby's failover timeout.</summary>
    private static readonly TimeSpan LinkFrozen = TimeSpan.FromSeconds(2);
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-ha-linux-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void PrimaryKilledInMidBoot_KernelBootsOnOnTheStandby_NoOutputTakenBack_Ext4RootChecksClean()
    {
        using var net = GuestNetworkNamespace.Create("vmm-ha");
        string primaryDirectory = Directory.CreateDirectory(Path.Combine(_directory, "primary")).FullName;
        string standbyDirectory = Directory.CreateDirectory(Path.Combine(_directory, "standby")).FullName;
        string root = Path.Combine(primaryDirectory, "root.ext4"), replica = Path.Combine(standbyDirectory, "root.ext4");
        string primarySocket = Path.Combine(_directory, "primary.sock"), standbySocket = Path.Combine(_directory, "standby.sock");
        string standbyConsolePath = Path.Combine(_directory, "standby-console.log");
        HostCommand.Checked("bash", Path.Combine(RepositoryPaths.Root, "guest-images", "make-rootfs.sh"), root);

        using var netconsole = net.Start(out var received, "socat", "-u", $"UDP-RECV:{NetconsolePort}", "STDOUT");
        using var primary = new RunningVmm(
            ["run", "-v", "--kernel", GuestImages.Vmlinux, "--memory", "256M", "--disk", root, "--net", GuestNetworkNamespace.NetOption,
             "--api-socket", primarySocket,
             "--cmdline", $"{MachineConfig.DefaultCommandLine} loglevel=7 root=/dev/vda rw rootdelay={RootDelayS} init=/bin/spin " +
                          GuestNetworkNamespace.KernelOptions(NetconsolePort)],
            net.Wrapper);
        string fence = FenceCommand(primary.Id);
        using var standby = new RunningVmm(
            ["standby", "-v", "--listen", "127.0.0.1:0", "--disk-dir", standbyDirectory, "--fence-command", fence,
             "--failover-timeout-ms", "5000", "--api-socket", standbySocket, "--serial-log", standbyConsolePath],
            net.Wrapper);
        Match? listening = null;
        Assert.True(standby.WaitFor((_, log) => (listening = Regex.Match(log, @"waiting for a primary on (\S+:\d+)")).Success, Patience), $"the standby did not listen\n{standby}");
        Assert.True(primary.WaitFor((_, _) => File.Exists(primarySocket), Patience), $"the primary opened no control socket\n{primary}");

        // The replication link runs through a relay the test can freeze (SIGSTOP): it then carries nothing either way.
        using var link = net.Start(out _, "socat", $"TCP-LISTEN:{LinkPort},bind=127.0.0.1,reuseaddr", $"TCP:{listening!.Groups[1].Value}");
        Assert.True(WaitFor(() => net.Run("ss", "-Hltn", $"sport = :{LinkPort}").Contains($":{LinkPort}"), Patience), "the relay did not listen");
        using (var replicate = new RunningVmm(["ctl", "--socket", primarySocket, "replicate", "--to", $"127.0.0.1:{LinkPort}"]))
        {
            int? exit = replicate.WaitForExit(BootPatience);
            output.WriteLine($"--- ctl replicate ---\n{replicate}");
            Assert.True(exit == 0, $"replication did not become protected\n{primary}");
        }
        Assert.DoesNotContain(TriggerLine, primary.Console);

        Assert.True(primary.WaitForConsole(TriggerLine, BootPatience), $"the primary's kernel never printed \"{TriggerLine}\"\n{primary}");
        var (heldAtKill, epochAtKill) = FreezeLinkWhileOutputIsHeld(primary, primarySocket, link.Id);
        bool diedBeforeTheKill = primary.HasExited;
        string netconsoleAtKill = Snapshot(received);
        primary.Kill();
        primary.WaitForExit(Patience);
        string primaryConsole = primary.Console;

        bool failedOver = standby.WaitFor((_, log) => log.Contains("standby: failover:"), Patience);
        bool initOnStandby = failedOver && WaitForFile(standbyConsolePath, InitLine, BootPatience);
        // The netconsole line left the guest with the console one; give the listener time to print it.
        bool initOverNetconsole = initOnStandby && WaitFor(() => Snapshot(received).Contains(InitLine), TimeSpan.FromSeconds(30));
        standby.Terminate();
        int? standbyExit = standby.WaitForExit(Patience);
        netconsole.Kill();
        netconsole.WaitForExit();
        string standbyConsole = ReadShared(standbyConsolePath), netconsoleText = Snapshot(received);
        var fsck = HostCommand.Run("e2fsck", "-n", "-f", replica);
        // The same on a copy with its journal replayed, as the kernel's next mount would: the file system it would see.
        string replayed = Path.Combine(_directory, "replayed.ext4");
        File.Copy(replica, replayed);
        var replay = HostCommand.Run("e2fsck", "-y", "-E", "journal_only", replayed);
        var fsckReplayed = HostCommand.Run("e2fsck", "-n", "-f", replayed);
        string mountCount = HostCommand.Checked("dumpe2fs", "-h", replica).Split('\n').First(l => l.StartsWith("Mount count:")).Split(':')[1].Trim();

        output.WriteLine($"--- primary ---\n{primary}\n--- standby ---\n{standby}\n--- standby console ---\n{standbyConsole}");
        output.WriteLine($"--- netconsole (received before the kill: {netconsoleAtKill.Length} bytes) ---\n{netconsoleText}");
        output.WriteLine($"--- e2fsck -n -f (exit {fsck.ExitCode}) ---\n{fsck.Output}");
        output.WriteLine($"--- on a copy: e2fsck -y -E journal_only (exit {replay.ExitCode}), then e2fsck -n -f (exit {fsckReplayed.ExitCode}) ---\n{replay.Output}{fsckReplayed.Output}");

        // The kill landed where it was meant to: after the protection, with output held, before the root was mounted.
        output.WriteLine($"killed with {heldAtKill} bytes of output held after epoch {epochAtKill}, the last whose commit reached the primary");
        Assert.False(diedBeforeTheKill, "the primary died before the test killed it (a spurious failover fenced it?)");
        Assert.DoesNotContain(MountedLine, primaryConsole);

        // 1. The kernel went on on the standby: it mounted its root and started init there.
        Assert.True(failedOver, "the standby did not fail over");
        Assert.Contains($"the fence command said: primary {primary.Id} is dead", standby.Log);
        Assert.True(initOnStandby, "the kernel did not reach init on the standby");
        Assert.Contains(MountedLine, standbyConsole);
        Assert.Equal(ExitCodes.Signal(15), standbyExit);

        // 2. Nothing the host received is contradicted by the resumed guest: its kernel clock, as the host saw it,
        // never goes back across the failover, on the console and over netconsole alike.
        var primaryTimes = KernelTimestamps(primaryConsole);
        var standbyTimes = KernelTimestamps(standbyConsole);
        Assert.NotEmpty(primaryTimes);
        Assert.NotEmpty(standbyTimes);
        output.WriteLine($"console: last timestamp from the primary {primaryTimes[^1]}, first from the standby {standbyTimes[0]}");
        Assert.True(primaryTimes[^1] <= standbyTimes[0], $"the standby's guest printed [{standbyTimes[0]}] after the host saw [{primaryTimes[^1]}] from the primary");
        AssertNeverBackwards("console", KernelTimestamps(primaryConsole + standbyConsole));
        // Where the primary's output ends in the middle of a line, the standby's must go on with the rest of it.
        Assert.All(CompleteLines(primaryConsole + standbyConsole), line => Assert.Matches(KernelLine(), line));
        Assert.True(initOverNetconsole, "the standby's guest sent no netconsole line reaching init");
        var netconsoleTimesAtKill = KernelTimestamps(netconsoleAtKill);
        Assert.NotEmpty(netconsoleTimesAtKill);
        AssertNeverBackwards("netconsole", KernelTimestamps(netconsoleText));
        // Each line reached the host once: the standby sends none of those the host had from the primary again, and
        // what it sent before mounting (the output held at the kill, done again) the host had not seen before.
        string netconsoleFromStandby = netconsoleText[netconsoleAtKill.Length..];
        // (Per channel: the serial console and netconsole each print a line in turn, so an epoch can end between them.)
        AssertNoLineAgain("console", primaryConsole, standbyConsole);
        AssertNoLineAgain("netconsole", netconsoleAtKill, netconsoleFromStandby);
        string redone = BeforeMount(standbyConsole) + BeforeMount(netconsoleFromStandby);
        output.WriteLine($"sent again by the standby, never seen from the primary:\n{redone}");
        Assert.False(string.IsNullOrWhiteSpace(redone), "the standby sent nothing before mounting: the output held at the kill was not done again");

        // 3. The standby's image, as its VM left it, is a consistent ext4 file system.
        // The standby's guest mounted it (the primary died before its mount), so its writes went to this image.
        Assert.Equal("1", mountCount);
        Assert.True(fsck.ExitCode == 0, $"e2fsck -n found problems in the standby's image (exit {fsck.ExitCode})");
        Assert.True(replay.ExitCode is 0 or 1, $"the journal of the standby's image could not be replayed (exit {replay.ExitCode})");
        Assert.True(fsckReplayed.ExitCode == 0, $"e2fsck -n found problems in the standby's image with its journal replayed (exit {fsckReplayed.ExitCode})");
    }

    /// <summary>The same failover while the guest's user space runs ticks (vmmtest=ticks, guest-images/ticks.c): a counter
    /// printed on the console only once it is durable in a file on the root disk. The primary is replicated once ticks
    /// runs, and killed after it counted on protected; the standby fences it and resumes the last committed epoch. The
    /// ticks the host received, the primary's then the standby's, must count 1, 2, 3, ... with none lost (output held at
    /// the kill is done again by the resumed guest) and none repeated (nothing left the primary that the replica lacks);
    /// told to stop, the guest ends the VM on the standby with 33, and the replica's image holds the same count, e2fsck
    /// clean.</summary>
    [Fact]
    public void PrimaryKilledWhileUserSpaceTicks_TheStandbyCountsOn_NoTickLostOrRepeated_TheFileChecksOut()
    {
        const int TicksBeforeEachStep = 10;
        using var net = GuestNetworkNamespace.Create("vmm-hat");
        string primaryDirectory = Directory.CreateDirectory(Path.Combine(_directory, "primary")).FullName;
        string standbyDirectory = Directory.CreateDirectory(Path.Combine(_directory, "standby")).FullName;
        string root = Path.Combine(primaryDirectory, "root.ext4"), replica = Path.Combine(standbyDirectory, "root.ext4");
        string primarySocket = Path.Combine(_directory, "primary.sock"), standbyConsolePath = Path.Combine(_directory, "standby-console.log");
        HostCommand.Checked("bash", Path.Combine(RepositoryPaths.Root, "guest-images", "make-rootfs.sh"), root);

        using var primary = new RunningVmm(
            ["run", "--kernel", GuestImages.Vmlinux, "--memory", "256M", "--disk", root, "--net", GuestNetworkNamespace.NetOption,
             "--api-socket", primarySocket,
             "--cmdline", $"{MachineConfig.DefaultCommandLine} loglevel=7 root=/dev/vda rw init=/init vmmtest=ticks " +
                          GuestNetworkNamespace.KernelOptions(NetconsolePort)],
            net.Wrapper);
        string fence = FenceCommand(primary.Id);
        using var standby = new RunningVmm(
            ["standby", "--listen", "127.0.0.1:0", "--disk-dir", standbyDirectory, "--fence-command", fence,
             "--failover-timeout-ms", "5000", "--serial-log", standbyConsolePath],
            net.Wrapper);
        Match? listening = null;
        Assert.True(standby.WaitFor((_, log) => (listening = Regex.Match(log, @"waiting for a primary on (\S+:\d+)")).Success, Patience), $"the standby did not listen\n{standby}");
        Assert.True(primary.WaitFor((console, _) => GuestTicks.Last(console) >= TicksBeforeEachStep, BootPatience), $"ticks did not run on the primary\n{primary}");

        using (var replicate = new RunningVmm(["ctl", "--socket", primarySocket, "replicate", "--to", listening!.Groups[1].Value]))
            Assert.True(replicate.WaitForExit(BootPatience) == 0, $"replication did not become protected\n{replicate}\n{primary}");
        long protectedAt = GuestTicks.Last(primary.Console);
        Assert.True(primary.WaitFor((console, _) => GuestTicks.Last(console) >= protectedAt + TicksBeforeEachStep, BootPatience), $"ticks stopped on the protected primary\n{primary}");
        Assert.False(primary.HasExited, $"the primary ended before the kill\n{primary}");
        primary.Kill();
        primary.WaitForExit(Patience);
        string primaryConsole = primary.Console;
        long lastFromPrimary = GuestTicks.Last(primaryConsole);

        bool failedOver = standby.WaitFor((_, log) => log.Contains("standby: failover:"), Patience);
        bool countingOn = failedOver && WaitFor(() => GuestTicks.Last(ReadShared(standbyConsolePath)) >= lastFromPrimary + TicksBeforeEachStep, BootPatience);
        bool stopped = countingOn && GuestTicks.Stop(net.Wrapper, GuestNetworkNamespace.GuestAddress, () => standby.HasExited, BootPatience);
        int? standbyExit = standby.WaitForExit(Patience);
        string standbyConsole = ReadShared(standbyConsolePath);
        output.WriteLine($"--- primary ---\n{primary}\n--- standby (exit code {standbyExit}) ---\n{standby}\n--- standby console ---\n{standbyConsole}");

        Assert.True(failedOver, "the standby did not fail over");
        Assert.Contains($"the fence command said: primary {primary.Id} is dead", standby.Log);
        Assert.True(countingOn, "ticks did not go on on the standby");
        Assert.True(stopped, "the guest did not end on the standby after the host told ticks to stop");
        Assert.Equal(ExitCodes.FromExitPort(0x10), standbyExit);
        Assert.Contains("VMM-TEST-PASSED ticks", standbyConsole);
        long ticks = GuestTicks.AssertCounted("the primary's console, then the standby's", primaryConsole, standbyConsole);
        GuestTicks.AssertDone(standbyConsole, ticks);
        var fsck = HostCommand.Run("e2fsck", "-f", "-n", replica);
        Assert.True(fsck.ExitCode == 0, $"e2fsck -f -n found problems in the standby's image (exit {fsck.ExitCode}):\n{fsck.Output}");
        Assert.Equal(ticks, GuestTicks.AssertFileCounted(replica));
        output.WriteLine($"evidence asserted: protected at tick {protectedAt}, the primary killed after tick {lastFromPrimary}; the standby " +
                         $"fenced it, resumed, and counted on to {ticks} with no tick lost or repeated on the console (primary then " +
                         "standby) or in the replica's file (e2fsck clean); the guest ended the VM with 33 on the standby");
    }

    /// <summary>The standby's fence command: it makes sure the primary is dead, its TAP file descriptor closed (gone, or a
    /// zombie), before saying so.</summary>
    private static string FenceCommand(int primary) =>
        $"kill -KILL {primary} 2>/dev/null; n=0; " +
        $"while [ -e /proc/{primary} ] && ! grep -q '^State:[[:space:]]*Z' /proc/{primary}/status 2>/dev/null; do " +
        "n=$((n+1)); [ $n -gt 600 ] && exit 1; sleep 0.05; done; " +
        $"echo primary {primary} is dead";

    /// <summary>Waits until some of the guest's output is held (its epoch not yet committed), then freezes the link to
    /// the standby: the guest runs on, but no epoch commits any more, so what is held then can never leave, and the
    /// epoch sealed next (its output released by a primary that did not wait for the commit) never reaches the
    /// standby. Once commits already on their way arrived, returns what is held and the last epoch committed.</summary>
    private static (long HeldBytes, long Epoch) FreezeLinkWhileOutputIsHeld(RunningVmm primary, string socket, int link)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (DateTime.UtcNow < deadline && !primary.HasExited)
        {
            if (Replication(socket).GetProperty("outputHeldBytes").GetInt64() == 0)
            {
                if (primary.Console.Contains(SleepLine)) break;
                Thread.Sleep(2);
                continue;
            }
            HostCommand.Checked("kill", "-STOP", link.ToString(CultureInfo.InvariantCulture));
            Thread.Sleep(LinkFrozen);
            var replication = Replication(socket);
            long held = replication.GetProperty("outputHeldBytes").GetInt64();
            if (held > 0) return (held, replication.GetProperty("epoch").GetInt64());
            HostCommand.Checked("kill", "-CONT", link.ToString(CultureInfo.InvariantCulture));
        }
        throw new Xunit.Sdk.XunitException($"no output of the primary was caught held before its kernel went to sleep\n{primary}");
    }

    private static JsonElement Replication(string socket)
    {
        var replication = ControlSocketClient.Ask(socket, "status").GetProperty("replication");
        Assert.Equal("protected", replication.GetProperty("state").GetString());
        return replication;
    }

    /// <summary>The lines before the mount's.</summary>
    private static string BeforeMount(string text)
    {
        int mounted = text.IndexOf(MountedLine, StringComparison.Ordinal);
        return mounted < 0 ? text : text[..(text.LastIndexOf('\n', mounted) + 1)];
    }

    private static IEnumerable<string> CompleteLines(string text) => text.Split('\n').SkipLast(1).Select(l => l.TrimEnd('\r')).Where(l => l.Length > 0);

    private static void AssertNoLineAgain(string what, string fromPrimary, string fromStandby)
    {
        var seen = KernelLines(fromPrimary).ToHashSet();
        Assert.All(KernelLines(fromStandby), line => Assert.False(seen.Contains(line), $"{what}: the host had \"{line}\" from the primary already"));
    }

    private static void AssertNeverBackwards(string what, IReadOnlyList<decimal> times)
    {
        for (int i = 1; i < times.Count; i++)
            Assert.True(times[i - 1] <= times[i], $"{what}: the kernel timestamp went back from [{times[i - 1]}] to [{times[i]}]");
    }

    private static List<decimal> KernelTimestamps(string text) =>
        KernelLine().Matches(text).Select(m => decimal.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();

    /// <summary>Each kernel line's text without its timestamp.</summary>
    private static IEnumerable<string> KernelLines(string text) => KernelLine().Matches(text).Select(m => m.Groups[2].Value.TrimEnd('\r'));

    private static string Snapshot(StringBuilder received)
    {
        lock (received) return received.ToString();
    }

    private static bool WaitForFile(string path, string text, TimeSpan timeout) => WaitFor(() => File.Exists(path) && ReadShared(path).Contains(text), timeout);

    private static bool WaitFor(Func<bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) return false;
            Thread.Sleep(100);
        }
        return true;
    }

    /// <summary>A file another process is still writing.</summary>
    private static string ReadShared(string path)
    {
        if (!File.Exists(path)) return "";
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return new StreamReader(stream).ReadToEnd();
    }

    [GeneratedRegex(@"^\[\s*(\d+\.\d+)\] ?(.*)$", RegexOptions.Multiline)]
    private static partial Regex KernelLine();
}
