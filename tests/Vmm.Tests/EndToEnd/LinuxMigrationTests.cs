using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>Live migration of the guest-images Linux guest between two "hosts", while its kernel boots. Each
/// host is a network namespace with its own TAP of the same name and address (192.168.250.1/24 on vmmtap0),
/// as when a VM moves between machines; a veth pair on 10.232.0.0/24 carries the migration stream, and the
/// root disk's path is the same on both sides (shared storage). The source is migrated once its kernel has
/// probed the virtio disk; the kernel must then go on booting on the target, its console taking up exactly
/// where the source's stopped, bring up its network there and answer pings from the new host.
/// init is /bin/spin, which makes no system call: the test proves what the guest kernel does, and runs the
/// same where guest user space cannot enter the kernel (the nested kvm_pvm backend).</summary>
[Trait("Category", "LinuxBoot")]
[Collection(LinuxGuests.Collection)]
public sealed class LinuxMigrationTests(ITestOutputHelper output) : IDisposable
{
    private const string HostAddress = "192.168.250.1", GuestAddress = "192.168.250.2", Tap = "vmmtap0";
    private const string SourceMigrationAddress = "10.232.0.1", TargetMigrationAddress = "10.232.0.2";
    private const int MigrationPort = 7701;
    private const string InitLine = "Run /bin/spin as init process", IpConfigLine = "IP-Config: Complete:";
    // Printed once the disk is probed: well before the network is configured and init runs (about 7 and 20 s
    // later here), so both happen on the target.
    private const string MigrateAtLine = "virtio_blk virtio0: [vda]";
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
    public void GuestKernel_MigratedWhileItBoots_ContinuesItsConsoleOnTheTargetAndAnswersPingsThere()
    {
        SetUpHosts();
        string root = Path.Combine(_directory, "root.ext4");
        HostCommand.Checked("bash", Path.Combine(RepositoryPaths.Root, "guest-images", "make-rootfs.sh"), root);
        string socket = Path.Combine(_directory, "source.sock");
        string to = $"{TargetMigrationAddress}:{MigrationPort}";

        using var target = new RunningVmm(["migrate-receive", "--listen", to, "--insecure", "--once", "--disk-dir", _directory], ["ip", "netns", "exec", _targetHost]);
        Assert.True(target.WaitFor((_, log) => log.Contains("waiting for migrations"), Patience), $"the target did not listen\n{target}");
        var clock = Stopwatch.StartNew();
        // rootdelay: on hardware KVM this kernel reaches init in well under a second, less than `vmm ctl` takes
        // to start, so the kernel's own wait before mounting its root keeps it booting while it moves. Here,
        // where the kernel is emulated, it only adds its 5 s.
        using var source = new RunningVmm(
            ["run", "--kernel", GuestImages.Vmlinux, "--memory", "256M", "--disk", root, "--net", $"tap={Tap},mac=02:00:00:00:02:02",
             "--api-socket", socket,
             "--cmdline", $"{MachineConfig.DefaultCommandLine} loglevel=7 root=/dev/vda rw rootdelay=5 init=/bin/spin " +
                          $"ip={GuestAddress}::{HostAddress}:255.255.255.0:guest:eth0:off"],
            ["ip", "netns", "exec", _sourceHost]);
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
            ping = HostCommand.Run("ip", "netns", "exec", _targetHost, "ping", "-c", "3", "-W", "10", GuestAddress);
        // `ip netns exec` execs vmm, so the process started is vmm itself.
        target.Terminate();
        int? targetExit = target.WaitForExit(Patience);

        output.WriteLine($"\"{MigrateAtLine}\" seen on the source {migrateAt.TotalSeconds:F1} s after its start; ctl exited " +
                         $"{migratedAt.TotalSeconds:F1} s; \"{InitLine}\" on the target {initAt.TotalSeconds:F1} s");
        output.WriteLine($"--- ctl (exit code {Text(ctlExit)}) ---\n{ctl}");
        output.WriteLine($"--- source (exit code {Text(sourceExit)}) ---\n{source}");
        output.WriteLine($"--- target (exit code {Text(targetExit)}) ---\n{target}");
        output.WriteLine($"--- ping from {_targetHost} (exit code {ping.ExitCode}) ---\n{ping.Output}");

        Assert.Equal(0, ctlExit);
        Assert.Contains("\"event\":\"pass\"", ctl.Console);
        Assert.Contains("\"state\":\"migrated\"", ctl.Console);
        Assert.Equal(0, sourceExit);
        Assert.Contains("the VM now runs on", source.Log);
        Assert.Contains("migration 1: the VM runs here", target.Log);

        Assert.DoesNotContain(InitLine, source.Console);
        Assert.Contains(InitLine, target.Console);
        Assert.Contains($"device=eth0, hwaddr=02:00:00:00:02:02, ipaddr={GuestAddress}", source.Console + target.Console);
        bool nested = NestedKvm.IsActiveOnThisHost();
        if (nested) Assert.Contains(IpConfigLine, target.Console);
        var boundary = AssertOneBoot(source.Console, target.Console);

        Assert.Equal(0, ping.ExitCode);
        Assert.Matches(@"3 packets transmitted, [123] received", ping.Output);
        Assert.Equal(ExitCodes.Signal(15), targetExit);
        Assert.Contains("stopped by SIGTERM", target.Log);

        output.WriteLine($"boundary: the source's last kernel line \"{boundary.SourceLast}\", the target's first \"{boundary.TargetFirst}\"");
        output.WriteLine("evidence asserted: ctl reported passes and \"migrated\" and exited 0; the source vmm exited 0 and said the VM runs " +
                         $"on the target; the source's console stops before \"{InitLine}\" and the target's has it" +
                         (nested ? $", and \"{IpConfigLine}\" (the guest configured its network on the new host)" : "") +
                         "; source console + target console read as one boot: \"Linux version\" once, every line a timestamped kernel " +
                         "line (none cut, doubled or spliced at the boundary), no line on both sides, timestamps never going back, the " +
                         "target's first at or after the source's last; the guest answered pings from the target's namespace on its " +
                         "own TAP; SIGTERM ended the target with exit code 143" +
                         (nested ? "" : " (hardware KVM: IP configuration may have happened on either side, the kernel waiting 5 s before mounting its root)"));
    }

    /// <summary>Asserts that the source's console followed by the target's is the console of one boot that
    /// never stopped, and returns the last kernel line printed on the source and the first on the target.</summary>
    private static (string SourceLast, string TargetFirst) AssertOneBoot(string sourceConsole, string targetConsole)
    {
        string joined = (sourceConsole + targetConsole).Replace("\r", "");
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
