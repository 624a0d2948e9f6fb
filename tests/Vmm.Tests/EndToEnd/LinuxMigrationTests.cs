using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>Live migration of the guest-images Linux guest between two "hosts", first while its kernel boots, then while
/// its user space runs, and then a snapshot and restore. Each host is a network namespace with its own TAP of the same
/// name and address (192.168.250.1/24 on vmmtap0), as when a VM moves between machines; a veth pair on 10.232.0.0/24
/// carries the migration stream, and the root disk's path is the same on both sides (shared storage).
/// 1. Host A boots the guest; once its kernel has probed the virtio disk it is migrated to host B, where the kernel must
///    go on booting, its console taking up exactly where A's stopped, configure its network and answer pings.
/// 2. On B the guest's init runs ticks (vmmtest=ticks, guest-images/ticks.c): a counter written to the console and, made
///    durable first, to a file on the root disk, with a chain value over every tick. While it ticks, the VM is migrated
///    back to A (a new receiver there), then paused, snapshotted and stopped, and restored from the snapshot on A.
/// 3. The host tells ticks to stop (UDP); the guest ends the VM through the exit port (33). The ticks on B's, A's and
///    the restored VM's consoles, read in that order, must count 1, 2, 3, ... with no tick lost or repeated, and the
///    ticks file in the image, e2fsck clean, must count the same.</summary>
[Trait("Category", "LinuxBoot")]
[Collection(LinuxGuests.Collection)]
public sealed class LinuxMigrationTests(ITestOutputHelper output) : IDisposable
{
    private const string HostAddress = "192.168.250.1", GuestAddress = "192.168.250.2", Tap = "vmmtap0";
    private const string SourceMigrationAddress = "10.232.0.1", TargetMigrationAddress = "10.232.0.2";
    private const int MigrationPort = 7701, BackMigrationPort = 7702;
    private const string InitLine = "Run /init as init process", IpConfigLine = "IP-Config: Complete:";
    // Printed once the disk is probed: well before the network is configured and init runs (about 7 and 20 s
    // later here), so both happen on the target.
    private const string MigrateAtLine = "virtio_blk virtio0: [vda]";
    /// <summary>Ticks a VM must have taken on a host before the test moves it on: each move then happens while ticks runs.</summary>
    private const int TicksPerHost = 10;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(90), BootPatience = TimeSpan.FromMinutes(10);
    private static readonly Regex KernelLogLine = new(@"^\[\s*(\d+\.\d{6})\] ", RegexOptions.Compiled);

    private readonly string _sourceHost = $"vmm-lmig-a-{Environment.ProcessId}", _targetHost = $"vmm-lmig-b-{Environment.ProcessId}";
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-lmig-").FullName;

    public void Dispose()
    {
        // Deleting a namespace deletes its TAP and its end of the veth pair, which takes the other end with it.
        HostCommand.Run("ip", "netns", "del", _sourceHost);
        HostCommand.Run("ip", "netns", "del", _targetHost);
        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public void Guest_MigratedWhileItBoots_ThenWhileItsUserSpaceTicks_ThenSnapshottedAndRestored_CountsOnWithoutALostTick()
    {
        SetUpHosts();
        string root = Path.Combine(_directory, "root.ext4");
        HostCommand.Checked("bash", Path.Combine(RepositoryPaths.Root, "guest-images", "make-rootfs.sh"), root);
        string socket = Path.Combine(_directory, "source.sock"), targetSocket = Path.Combine(_directory, "target.sock");
        string backSocket = Path.Combine(_directory, "back.sock"), snapshot = Path.Combine(_directory, "snapshot");
        string to = $"{TargetMigrationAddress}:{MigrationPort}", back = $"{SourceMigrationAddress}:{BackMigrationPort}";
        string[] inSource = ["ip", "netns", "exec", _sourceHost], inTarget = ["ip", "netns", "exec", _targetHost];

        using var target = new RunningVmm(["migrate-receive", "--listen", to, "--insecure", "--once", "--disk-dir", _directory, "--api-socket", targetSocket], inTarget);
        Assert.True(target.WaitFor((_, log) => log.Contains("waiting for migrations"), Patience), $"the target did not listen\n{target}");
        var clock = Stopwatch.StartNew();
        // rootdelay: on hardware KVM this kernel reaches init in well under a second, less than `vmm ctl` takes
        // to start, so the kernel's own wait before mounting its root keeps it booting while it moves. Here,
        // where the kernel is emulated, it only adds its 5 s.
        using var source = new RunningVmm(
            ["run", "--kernel", GuestImages.Vmlinux, "--memory", "256M", "--disk", root, "--net", $"tap={Tap},mac=02:00:00:00:02:02",
             "--api-socket", socket,
             "--cmdline", $"{MachineConfig.DefaultCommandLine} loglevel=7 root=/dev/vda rw rootdelay=5 init=/init vmmtest=ticks " +
                          $"ip={GuestAddress}::{HostAddress}:255.255.255.0:guest:eth0:off"],
            inSource);
        Assert.True(source.WaitForConsole(MigrateAtLine, BootPatience), $"the source guest never printed \"{MigrateAtLine}\"\n{source}");
        var migrateAt = clock.Elapsed;

        // --force: the test is about the guest going on over there, not about how many passes this host needs.
        using var ctl = new RunningVmm(["ctl", "--socket", socket, "migrate", "--to", to, "--force"]);
        int? ctlExit = ctl.WaitForExit(BootPatience);
        var migratedAt = clock.Elapsed;
        int? sourceExit = source.WaitForExit(Patience);
        // Ping once init runs (the kernel is then idle), and again while no echo has come back: how soon an
        // emulated kernel on a busy host answers is not what this test is about, that it answers there is.
        bool initOnTarget = target.WaitForConsole(InitLine, BootPatience);
        var initAt = clock.Elapsed;
        (int ExitCode, string Output) ping = (-1, "(not run: init never started on the target)");
        for (int attempt = 0; initOnTarget && attempt < 10 && ping.ExitCode != 0; attempt++)
            ping = HostCommand.Run([.. inTarget, "ping", "-c", "3", "-W", "10", GuestAddress]);

        output.WriteLine($"\"{MigrateAtLine}\" seen on the source {migrateAt.TotalSeconds:F1} s after its start; ctl exited " +
                         $"{migratedAt.TotalSeconds:F1} s; \"{InitLine}\" on the target {initAt.TotalSeconds:F1} s");
        output.WriteLine($"--- ctl (exit code {Text(ctlExit)}) ---\n{ctl}");
        output.WriteLine($"--- source (exit code {Text(sourceExit)}) ---\n{source}");
        output.WriteLine($"--- ping from {_targetHost} (exit code {ping.ExitCode}) ---\n{ping.Output}");

        Assert.Equal(0, ctlExit);
        Assert.Contains("\"event\":\"pass\"", ctl.Console);
        Assert.Contains("\"state\":\"migrated\"", ctl.Console);
        Assert.Equal(0, sourceExit);
        Assert.Contains("the VM now runs on", source.Log);
        Assert.Contains("migration 1: the VM runs here", target.Log);
        Assert.True(initOnTarget, $"the kernel did not reach init on the target\n{target}");
        Assert.DoesNotContain(InitLine, source.Console);
        Assert.Contains($"device=eth0, hwaddr=02:00:00:00:02:02, ipaddr={GuestAddress}", source.Console + target.Console);
        bool nested = NestedKvm.IsActiveOnThisHost();
        if (nested) Assert.Contains(IpConfigLine, target.Console);
        var boundary = AssertOneBoot(source.Console, target.Console);
        Assert.Equal(0, ping.ExitCode);
        Assert.Matches(@"3 packets transmitted, [123] received", ping.Output);

        // 2. Back to A while ticks runs there.
        Assert.True(target.WaitFor((console, _) => GuestTicks.Last(console) >= TicksPerHost, BootPatience), $"ticks did not run on the target\n{target}");
        using var returned = new RunningVmm(["migrate-receive", "--listen", back, "--insecure", "--once", "--disk-dir", _directory, "--api-socket", backSocket], inSource);
        Assert.True(returned.WaitFor((_, log) => log.Contains("waiting for migrations"), Patience), $"host A did not listen again\n{returned}");
        using (var ctlBack = new RunningVmm(["ctl", "--socket", targetSocket, "migrate", "--to", back, "--force"]))
            Assert.True(ctlBack.WaitForExit(BootPatience) == 0, $"the migration back to A failed\n{ctlBack}\n{target}");
        int? targetExit = target.WaitForExit(Patience);
        long lastOnTarget = GuestTicks.Last(target.Console);
        Assert.True(returned.WaitFor((console, _) => GuestTicks.Last(console) >= lastOnTarget + TicksPerHost, BootPatience), $"ticks did not go on on A\n{returned}");

        // 3. A snapshot of the paused VM, the VM stopped, the snapshot restored: the disk holds what it held at the snapshot.
        foreach (string[] command in new[] { ["pause"], new[] { "snapshot", snapshot }, ["stop"] })
            using (var step = new RunningVmm(["ctl", "--socket", backSocket, .. command]))
                Assert.True(step.WaitForExit(Patience) == 0, $"ctl {command[0]} failed\n{step}\n{returned}");
        int? returnedExit = returned.WaitForExit(Patience);
        long lastOnReturned = GuestTicks.Last(returned.Console);
        using var restored = new RunningVmm(["run", "--restore", snapshot], inSource);
        Assert.True(restored.WaitFor((console, _) => GuestTicks.Last(console) >= lastOnReturned + TicksPerHost, BootPatience), $"ticks did not go on after the restore\n{restored}");
        bool stopped = GuestTicks.Stop(inSource, GuestAddress, () => restored.HasExited, BootPatience);
        int? restoredExit = restored.WaitForExit(Patience);

        output.WriteLine($"--- target (exit code {Text(targetExit)}) ---\n{target}");
        output.WriteLine($"--- back on A (exit code {Text(returnedExit)}) ---\n{returned}");
        output.WriteLine($"--- restored (exit code {Text(restoredExit)}) ---\n{restored}");
        Assert.Equal(0, targetExit);
        Assert.Equal(0, returnedExit);
        Assert.True(stopped, "the restored guest did not end after the host told ticks to stop");
        Assert.Equal(ExitCodes.FromExitPort(0x10), restoredExit);
        Assert.Contains("VMM-TEST-PASSED ticks", restored.Console);
        long ticks = GuestTicks.AssertCounted("consoles of B, A and the restored VM", target.Console, returned.Console, restored.Console);
        GuestTicks.AssertDone(restored.Console, ticks);
        var fsck = HostCommand.Run("e2fsck", "-f", "-n", root);
        Assert.True(fsck.ExitCode == 0, $"e2fsck -f -n found problems in the image (exit {fsck.ExitCode}):\n{fsck.Output}");
        Assert.Equal(ticks, GuestTicks.AssertFileCounted(root));

        output.WriteLine($"boundary: the source's last kernel line \"{boundary.SourceLast}\", the target's first \"{boundary.TargetFirst}\"");
        output.WriteLine($"ticks: {lastOnTarget} on B, to {lastOnReturned} on A, to {ticks} restored");
        output.WriteLine("evidence asserted: ctl reported passes and \"migrated\" and exited 0; the source vmm exited 0 and said the VM runs " +
                         $"on the target; the source's console stops before \"{InitLine}\" and the target's has it" +
                         (nested ? $", and \"{IpConfigLine}\" (the guest configured its network on the new host)" : "") +
                         "; source console + target console read as one boot up to init: \"Linux version\" once, every line a timestamped " +
                         "kernel line (none cut, doubled or spliced at the boundary), no line on both sides, timestamps never going back; " +
                         "the guest answered pings from the target's namespace on its own TAP; its user space counted on across a migration " +
                         "back to A and a snapshot and restore, with no tick lost or repeated on the consoles or in its file on the disk " +
                         "(e2fsck clean), and ended the VM with 33" +
                         (nested ? "" : " (hardware KVM: IP configuration may have happened on either side, the kernel waiting 5 s before mounting its root)"));
    }

    /// <summary>Asserts that the source's console followed by the target's, up to the kernel's start of init (user space
    /// prints lines of its own after it), is the console of one boot that never stopped, and returns the last kernel line
    /// printed on the source and the first on the target.</summary>
    private static (string SourceLast, string TargetFirst) AssertOneBoot(string sourceConsole, string targetConsole)
    {
        string joined = (sourceConsole + targetConsole).Replace("\r", "");
        int init = joined.IndexOf(InitLine, StringComparison.Ordinal);
        Assert.True(init >= 0, "the kernel did not start init");
        int endOfInitLine = joined.IndexOf('\n', init);
        joined = endOfInitLine < 0 ? joined : joined[..(endOfInitLine + 1)];
        int boundary = sourceConsole.Replace("\r", "").Length;
        Assert.Single(Regex.Matches(joined, "Linux version "));

        // Each line with where it starts; a line the source began and the target ended belongs to neither side.
        var lines = new List<(int Start, string Text)>();
        for (int start = 0; start < joined.Length;)
        {
            int end = joined.IndexOf('\n', start);
            if (end < 0) end = joined.Length;
            lines.Add((start, joined[start..end]));
            start = end + 1;
        }
        double previous = 0;
        foreach (var (_, text) in lines)
        {
            var match = KernelLogLine.Match(text);
            Assert.True(match.Success, $"not a whole kernel log line (cut, doubled or spliced?): \"{text}\"");
            double seconds = Seconds(match);
            Assert.True(seconds >= previous, $"the kernel's clock went back to {seconds} s after {previous} s: \"{text}\"");
            previous = seconds;
        }
        var onSource = lines.Where(l => l.Start + l.Text.Length < boundary).Select(l => l.Text).ToList();
        var onTarget = lines.Where(l => l.Start >= boundary).Select(l => l.Text).ToList();
        Assert.NotEmpty(onSource);
        Assert.NotEmpty(onTarget);
        Assert.Empty(onSource.Intersect(onTarget));
        string sourceLast = onSource[^1], targetFirst = onTarget[0];
        Assert.True(Seconds(KernelLogLine.Match(targetFirst)) >= Seconds(KernelLogLine.Match(sourceLast)),
            $"the target's first kernel line \"{targetFirst}\" is older than the source's last \"{sourceLast}\"");
        return (sourceLast, targetFirst);
    }

    private static double Seconds(Match kernelLogLine) => double.Parse(kernelLogLine.Groups[1].Value, CultureInfo.InvariantCulture);

    private static string Text(int? exitCode) => exitCode?.ToString(CultureInfo.InvariantCulture) ?? "none: still running";

    /// <summary>Two hosts: each namespace has the guest's TAP, same name and address; a veth pair joins them.</summary>
    private void SetUpHosts()
    {
        foreach (string host in new[] { _sourceHost, _targetHost })
        {
            HostCommand.Checked("ip", "netns", "add", host);
            HostCommand.Checked("ip", "-n", host, "link", "set", "lo", "up");
            HostCommand.Checked("ip", "-n", host, "tuntap", "add", "dev", Tap, "mode", "tap");
            HostCommand.Checked("ip", "-n", host, "addr", "add", $"{HostAddress}/24", "dev", Tap);
            HostCommand.Checked("ip", "-n", host, "link", "set", Tap, "up");
            // The host knows the guest's MAC from the start (see LinuxNetworkTests).
            HostCommand.Checked("ip", "-n", host, "neigh", "replace", GuestAddress, "lladdr", "02:00:00:00:02:02", "dev", Tap, "nud", "permanent");
        }
        string vethSource = $"lma{Environment.ProcessId % 100000}", vethTarget = $"lmb{Environment.ProcessId % 100000}";
        HostCommand.Checked("ip", "link", "add", vethSource, "netns", _sourceHost, "type", "veth", "peer", "name", vethTarget, "netns", _targetHost);
        HostCommand.Checked("ip", "-n", _sourceHost, "addr", "add", $"{SourceMigrationAddress}/24", "dev", vethSource);
        HostCommand.Checked("ip", "-n", _targetHost, "addr", "add", $"{TargetMigrationAddress}/24", "dev", vethTarget);
        HostCommand.Checked("ip", "-n", _sourceHost, "link", "set", vethSource, "up");
        HostCommand.Checked("ip", "-n", _targetHost, "link", "set", vethTarget, "up");
    }
}
