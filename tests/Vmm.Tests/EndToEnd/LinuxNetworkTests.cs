using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>virtio-net with the guest-images kernel and its user space, on a TAP inside a network namespace the test
/// makes (192.168.250.0/24, nothing routed outside it). The guest's init (vmmtest=net) configures eth0 with busybox
/// ip, pings the host, fetches a file from a host listener over TCP and sends it back, and the checksums must match;
/// the host pings the guest; and the guest kernel sends its log to the host over UDP from early boot (netconsole=,
/// which brings eth0 up by itself).</summary>
[Trait("Category", "LinuxBoot")]
[Collection(LinuxGuests.Collection)]
public sealed class LinuxNetworkTests(ITestOutputHelper output) : IDisposable
{
    private const string HostAddress = GuestNetworkNamespace.HostAddress, GuestAddress = GuestNetworkNamespace.GuestAddress;
    private const int NetconsolePort = 6666, FetchPort = 7001, ReturnPort = 7002;
    private const string Configured = "VMM-NET configured";
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-net-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void GuestUserSpace_ConfiguresEth0_PingsTheHostAndMovesAFileBothWays_WhileTheKernelLogsOverUdp()
    {
        using var net = GuestNetworkNamespace.Create("vmm-e2e");
        string root = Path.Combine(_directory, "root.ext4");
        HostCommand.Checked("bash", Path.Combine(RepositoryPaths.Root, "guest-images", "make-rootfs.sh"), root);

        string payload = Path.Combine(_directory, "payload.bin"), returned = Path.Combine(_directory, "returned.bin");
        File.WriteAllBytes(payload, RandomNumberGenerator.GetBytes(256 * 1024));
        string payloadSha256 = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(payload))).ToLowerInvariant();

        using var listener = net.Start(out var received, "socat", "-u", $"UDP-RECV:{NetconsolePort}", "STDOUT");
        using var fileServer = net.Start(out _, "socat", "-u", $"OPEN:{payload}", $"TCP-LISTEN:{FetchPort},reuseaddr");
        using var fileReceiver = net.Start(out _, "socat", "-u", $"TCP-LISTEN:{ReturnPort},reuseaddr", $"CREATE:{returned}");
        string ping = "";
        int pings = 0;
        var result = VmmProcess.Run(
            ["run", "--kernel", GuestImages.Vmlinux, "--memory", "256M", "--disk", root, "--net", GuestNetworkNamespace.NetOption,
             "--cmdline", $"{MachineConfig.DefaultCommandLine} loglevel=7 root=/dev/vda rw init=/init vmmtest=net " +
                          GuestNetworkNamespace.NetconsoleOption(NetconsolePort)],
            TimeSpan.FromMinutes(20),
            terminateWhen: (console, _) =>
            {
                // Ping once the guest has configured itself, and again while no echo has come back: how soon an emulated
                // kernel on a busy host answers is not what this test is about, that it answers is. The guest ends the VM.
                if (!Answered(ping) && pings < 20 && console.Contains(Configured))
                {
                    pings++;
                    ping = net.Run("ping", "-c", "3", "-W", "10", GuestAddress);
                }
                return false;
            },
            wrapper: net.Wrapper);
        // The netconsole line left the guest long before it ended; give the listener time to print it.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline && !ReceivedContains(received, "Run /init as init process")) Thread.Sleep(50);
        foreach (var p in new[] { listener, fileServer, fileReceiver })
            if (!p.HasExited) p.Kill();

        output.WriteLine($"vmm exit code {result.ExitCode} after {result.Elapsed.TotalSeconds:F1} s");
        output.WriteLine("ping from the host:\n" + ping);
        output.WriteLine("netconsole received:\n" + received);
        output.WriteLine("vmm log:\n" + result.Log);
        output.WriteLine("console:\n" + result.Console);
        Assert.Contains($"{Configured} {GuestAddress} on eth0", result.Console);
        Assert.Matches(@"3 packets transmitted, [123] packets received", result.Console);
        Assert.Contains($"VMM-NET received {payloadSha256}", result.Console);
        Assert.Contains("VMM-TEST-PASSED net", result.Console);
        Assert.Equal(ExitCodes.FromExitPort(0x10), result.ExitCode);
        Assert.True(File.Exists(returned), "the guest sent nothing back");
        Assert.Equal(payloadSha256, Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(returned))).ToLowerInvariant());
        Assert.True(Answered(ping), $"the guest answered none of the host's pings:\n{ping}");
        lock (received) Assert.Contains("Run /init as init process", received.ToString());
        output.WriteLine("evidence asserted: the guest configured eth0 with ip, its pings of the host were answered, it fetched a " +
                         "256 KiB file from the host over TCP (SHA-256 printed by the guest equal) and sent it back (equal on the host), " +
                         "it answered the host's pings, its kernel log reached the host over netconsole, and init ended the VM with 33");
    }

    private static bool Answered(string ping) => Regex.IsMatch(ping, "3 packets transmitted, [123] received");

    private static bool ReceivedContains(StringBuilder received, string text)
    {
        lock (received) return received.ToString().Contains(text);
    }
}
