using System.Diagnostics;
using System.Text;

namespace Vmm.Tests.EndToEnd;

/// <summary>A network namespace of the test's own with one persistent TAP for a guest (192.168.250.0/24, nothing
/// routed outside it): vmm and the host's listeners run inside it through <see cref="Wrapper"/>. Deleted, TAP and
/// all, on dispose.</summary>
internal sealed class GuestNetworkNamespace : IDisposable
{
    public const string HostAddress = "192.168.250.1", GuestAddress = "192.168.250.2", Tap = "vmmtap0", GuestMac = "02:00:00:00:02:02";

    private GuestNetworkNamespace(string name) => Name = name;

    public string Name { get; }

    /// <summary>Runs a command inside the namespace when put before it.</summary>
    public IReadOnlyList<string> Wrapper => ["ip", "netns", "exec", Name];

    /// <summary>The guest's --net option.</summary>
    public static string NetOption => $"tap={Tap},mac={GuestMac}";

    /// <summary>Kernel options for a guest that configures its own address (ip=) and sends its log to the host's
    /// UDP <paramref name="netconsolePort"/> (netconsole=).</summary>
    public static string KernelOptions(int netconsolePort) =>
        $"ip={GuestAddress}::{HostAddress}:255.255.255.0:guest:eth0:off {NetconsoleOption(netconsolePort)}";

    /// <summary>netconsole= alone: the kernel sends its log from <see cref="GuestAddress"/> to the host's UDP
    /// <paramref name="netconsolePort"/>, bringing eth0 up itself, and leaves configuring the interface to the guest.</summary>
    public static string NetconsoleOption(int netconsolePort) => $"netconsole=6665@{GuestAddress}/eth0,{netconsolePort}@{HostAddress}/";

    public static GuestNetworkNamespace Create(string prefix)
    {
        var space = new GuestNetworkNamespace($"{prefix}-{Environment.ProcessId}");
        HostCommand.Checked("ip", "netns", "add", space.Name);
        try
        {
            space.Checked("ip", "link", "set", "lo", "up");
            space.Checked("ip", "tuntap", "add", "dev", Tap, "mode", "tap");
            space.Checked("ip", "addr", "add", $"{HostAddress}/24", "dev", Tap);
            space.Checked("ip", "link", "set", Tap, "up");
            // The host knows the guest's MAC from the start: its ARP requests would otherwise have to be answered by
            // an emulated kernel within the host's own three-second neighbour deadline, which a busy host can miss.
            space.Checked("ip", "neigh", "replace", GuestAddress, "lladdr", GuestMac, "dev", Tap, "nud", "permanent");
            return space;
        }
        catch
        {
            space.Dispose();
            throw;
        }
    }

    /// <summary>Runs a command inside the namespace; its stdout and stderr.</summary>
    public string Run(params string[] command) => HostCommand.Run([.. Wrapper, .. command]).Output;

    private void Checked(params string[] command) => HostCommand.Checked([.. Wrapper, .. command]);

    /// <summary>Starts a command inside the namespace, collecting its standard output as it comes.</summary>
    public Process Start(out StringBuilder stdout, params string[] command)
    {
        var text = new StringBuilder();
        var process = Process.Start(new ProcessStartInfo(Wrapper[0], [.. Wrapper.Skip(1), .. command]) { RedirectStandardOutput = true })!;
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (text) text.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        stdout = text;
        return process;
    }

    /// <summary>Ends what still runs inside (the test's listeners and relays, a vmm a failed assertion left behind),
    /// which would otherwise keep the namespace and its TAP alive, then deletes it.</summary>
    public void Dispose()
    {
        foreach (string pid in HostCommand.Run("ip", "netns", "pids", Name).Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            if (int.TryParse(pid, out _)) HostCommand.Run("kill", "-KILL", pid);
        HostCommand.Run("ip", "netns", "del", Name);
    }
}
