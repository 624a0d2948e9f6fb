using System.Diagnostics;
using System.Text;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>virtio-net with the guest-images kernel, on a TAP inside a network namespace the test makes
/// (192.168.250.0/24, nothing routed outside it). The guest kernel configures itself (ip=), answers the
/// host's pings and sends its log to the host over UDP (netconsole=). Its init is /bin/spin, which never
/// makes a system call, so the kernel stays up serving the network on every host, the nested backend
/// (where user space cannot enter the kernel) included; the test ends the VM with SIGTERM.</summary>
[Trait("Category", "LinuxBoot")]
[Collection(LinuxGuests.Collection)]
public sealed class LinuxNetworkTests(ITestOutputHelper output) : IDisposable
{
    private const string HostAddress = "192.168.250.1", GuestAddress = "192.168.250.2", Tap = "vmmtap0";
    private const int NetconsolePort = 6666;
    private readonly string _namespace = $"vmm-e2e-{Environment.ProcessId}";
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-net-").FullName;

    public void Dispose()
    {
        Run("ip", "netns", "del", _namespace);
        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public void GuestKernel_ConfiguresItsAddressAnswersPingsAndSendsItsLogOverUdp()
    {
        MustRun("ip", "netns", "add", _namespace);
        InNamespace("ip", "link", "set", "lo", "up");
        InNamespace("ip", "tuntap", "add", "dev", Tap, "mode", "tap");
        InNamespace("ip", "addr", "add", $"{HostAddress}/24", "dev", Tap);
        InNamespace("ip", "link", "set", Tap, "up");
        string root = Path.Combine(_directory, "root.ext4");
        MustRun("bash", Path.Combine(RepositoryPaths.Root, "guest-images", "make-rootfs.sh"), root);

        using var listener = StartNetconsoleListener(out var received);
        string ping = "";
        var result = VmmProcess.Run(
            ["run", "--kernel", GuestImages.Vmlinux, "--memory", "256M", "--disk", root, "--net", $"tap={Tap},mac=02:00:00:00:02:02",
             "--cmdline", $"{MachineConfig.DefaultCommandLine} loglevel=7 root=/dev/vda rw init=/bin/spin " +
                          $"ip={GuestAddress}::{HostAddress}:255.255.255.0:guest:eth0:off " +
                          $"netconsole=6665@{GuestAddress}/eth0,{NetconsolePort}@{HostAddress}/"],
            TimeSpan.FromMinutes(20),
            terminateWhen: (console, _) =>
            {
                if (!console.Contains("Run /bin/spin as init process")) return false;
                ping = InNamespace("ping", "-c", "3", "-W", "10", GuestAddress);
                return true;
            },
            wrapper: ["ip", "netns", "exec", _namespace]);
        Thread.Sleep(1000);
        listener.Kill();
        listener.WaitForExit();

        output.WriteLine($"vmm exit code {result.ExitCode} after {result.Elapsed.TotalSeconds:F1} s");
        output.WriteLine("ping:\n" + ping);
        output.WriteLine("netconsole received:\n" + received);
        output.WriteLine("vmm log:\n" + result.Log);
        output.WriteLine("console:\n" + result.Console);
        Assert.Contains("IP-Config: Complete:", result.Console);
        Assert.Contains($"device=eth0, hwaddr=02:00:00:00:02:02, ipaddr={GuestAddress}", result.Console);
        Assert.Matches(@"3 packets transmitted, [123] received", ping);
        lock (received) Assert.Contains("Run /bin/spin as init process", received.ToString());
        Assert.Equal(ExitCodes.Signal(15), result.ExitCode);
        output.WriteLine("evidence asserted: the guest kernel's own IP configuration, its ICMP replies and its netconsole log " +
                         "(all kernel-side, so the same on the nested backend and on hardware KVM)");
    }

    private Process StartNetconsoleListener(out StringBuilder received)
    {
        var text = new StringBuilder();
        var info = new ProcessStartInfo("ip", ["netns", "exec", _namespace, "socat", "-u", $"UDP-RECV:{NetconsolePort}", "STDOUT"])
        {
            RedirectStandardOutput = true,
        };
        var process = Process.Start(info)!;
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (text) text.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        received = text;
        return process;
    }

    private string InNamespace(params string[] command) => Run(["ip", "netns", "exec", _namespace, .. command]);

    private static void MustRun(params string[] command)
    {
        string result = Run(command);
        Assert.True(result.StartsWith("exit 0", StringComparison.Ordinal), $"{string.Join(' ', command)}: {result}");
    }

    /// <summary>Runs a command; returns "exit N" followed by its output.</summary>
    private static string Run(params string[] command)
    {
        using var process = Process.Start(new ProcessStartInfo(command[0], command.Skip(1)) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return $"exit {process.ExitCode}\n{stdout.Result}{stderr.Result}";
    }
}
