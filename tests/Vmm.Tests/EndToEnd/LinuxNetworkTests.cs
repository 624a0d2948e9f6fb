using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>virtio-net with the guest-images kernel, on a TAP inside a network namespace the test makes
/// (192.168.250.0/24, nothing routed outside it). The guest kernel configures itself (ip=), answers the
/// host's pings and sends its log to the host over UDP (netconsole=). Where guest user space runs, its
/// init (/net-init) also takes a file from the host over TCP and sends it back, and the checksums must
/// match. On the nested backend, where user space cannot enter the kernel, init is /bin/spin, which never
/// makes a system call, so the kernel stays up serving the network; the test then ends the VM with SIGTERM.</summary>
[Trait("Category", "LinuxBoot")]
[Collection(LinuxGuests.Collection)]
public sealed class LinuxNetworkTests(ITestOutputHelper output) : IDisposable
{
    private const string HostAddress = GuestNetworkNamespace.HostAddress, GuestAddress = GuestNetworkNamespace.GuestAddress;
    private const int NetconsolePort = 6666, GuestTcpPort = 7000, HostTcpPort = 7001;
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-net-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void GuestKernel_ConfiguresItsAddressAnswersPingsAndSendsItsLogOverUdp()
    {
        using var net = GuestNetworkNamespace.Create("vmm-e2e");
        string root = Path.Combine(_directory, "root.ext4");
        HostCommand.Checked("bash", Path.Combine(RepositoryPaths.Root, "guest-images", "make-rootfs.sh"), root);

        bool userSpaceRuns = !NestedKvm.IsActiveOnThisHost();
        string payload = Path.Combine(_directory, "payload.bin"), returned = Path.Combine(_directory, "returned.bin");
        File.WriteAllBytes(payload, RandomNumberGenerator.GetBytes(256 * 1024));

        using var listener = net.Start(out var received, "socat", "-u", $"UDP-RECV:{NetconsolePort}", "STDOUT");
        using var tcpReceiver = userSpaceRuns ? net.Start(out _, "socat", "-u", $"TCP-LISTEN:{HostTcpPort},reuseaddr", $"CREATE:{returned}") : null;
        Process? tcpSender = null;
        string init = userSpaceRuns ? "/net-init" : "/bin/spin";
        string ping = "";
        int pings = 0;
        var result = VmmProcess.Run(
            ["run", "--kernel", GuestImages.Vmlinux, "--memory", "256M", "--disk", root, "--net", GuestNetworkNamespace.NetOption,
             "--cmdline", $"{MachineConfig.DefaultCommandLine} loglevel=7 root=/dev/vda rw init={init} " +
                          GuestNetworkNamespace.KernelOptions(NetconsolePort)],
            TimeSpan.FromMinutes(20),
            terminateWhen: (console, elapsed) =>
            {
                // Ping once init runs (the kernel is then idle), and again while no echo has come back: how soon
                // an emulated kernel on a busy host answers is not what this test is about, that it answers is.
                if (!Answered(ping) && pings < 20 && console.Contains($"Run {init} as init process"))
                {
                    pings++;
                    ping = net.Run("ping", "-c", "3", "-W", "10", GuestAddress);
                    if (userSpaceRuns && tcpSender is null)
                        tcpSender = net.Start(out _, "socat", "-u", $"OPEN:{payload}", $"TCP:{GuestAddress}:{GuestTcpPort},retry=60,interval=1");
                }
                // Where user space runs, init ends the VM itself after the round trip.
                return !userSpaceRuns && (Answered(ping) || pings == 20);
            },
            wrapper: net.Wrapper);
        // The netconsole line left the guest before the ping was answered; give the listener time to print it.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline && !ReceivedContains(received, $"Run {init} as init process")) Thread.Sleep(50);
        foreach (var p in new[] { listener, tcpReceiver, tcpSender })
            if (p is not null && !p.HasExited) p.Kill();
        tcpSender?.Dispose();

        output.WriteLine($"vmm exit code {result.ExitCode} after {result.Elapsed.TotalSeconds:F1} s");
        output.WriteLine("ping:\n" + ping);
        output.WriteLine("netconsole received:\n" + received);
        output.WriteLine("vmm log:\n" + result.Log);
        output.WriteLine("console:\n" + result.Console);
        Assert.Contains("IP-Config: Complete:", result.Console);
        Assert.Contains($"device=eth0, hwaddr=02:00:00:00:02:02, ipaddr={GuestAddress}", result.Console);
        Assert.Matches(@"3 packets transmitted, [123] received", ping);
        lock (received) Assert.Contains($"Run {init} as init process", received.ToString());
        if (userSpaceRuns)
        {
            output.WriteLine("evidence asserted: the guest kernel's IP configuration, ICMP replies and netconsole log, and a 256 KiB " +
                             "file sent to the guest's init over TCP and back with matching SHA-256 (hardware KVM: user space runs)");
            Assert.Equal(ExitCodes.FromExitPort(0x10), result.ExitCode);
            Assert.Contains("VMM-NET-INIT-OK", result.Console);
            Assert.Equal(SHA256.HashData(File.ReadAllBytes(payload)), SHA256.HashData(File.ReadAllBytes(returned)));
        }
        else
        {
            output.WriteLine("evidence asserted: the guest kernel's own IP configuration, its ICMP replies and its netconsole log " +
                             "(nested kvm_pvm: guest user space cannot make system calls, so the TCP file round trip cannot run here)");
            Assert.Equal(ExitCodes.Signal(15), result.ExitCode);
        }
    }

    private static bool Answered(string ping) => Regex.IsMatch(ping, "3 packets transmitted, [123] received");

    private static bool ReceivedContains(StringBuilder received, string text)
    {
        lock (received) return received.ToString().Contains(text);
    }
}
