using System.Diagnostics;
using System.Text.RegularExpressions;
using Vmm.Firmware;
using Vmm.Tests.EndToEnd;
using Vmm.Tests.Integration;
using Xunit;

namespace Vmm.Tests.Ocf;

/// <summary>The two-node cluster of scripts/cluster.sh, with its own namespaces and state directory (apart from a
/// cluster run by hand), for the tests that drive ocf:vmm:vm through Pacemaker. Brought down on dispose, unless
/// VMM_TEST_KEEP_CLUSTER is set: then the nodes and their logs stay for a look (scripts/cluster.sh with the same
/// VMM_CLUSTER_PREFIX and VMM_CLUSTER_DIR brings them down).</summary>
internal sealed class TestCluster : IDisposable
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);

    public TestCluster()
    {
        Vmm = Path.Combine(Directory, "vmm");
        File.WriteAllText(Vmm, $"#!/bin/sh\nexec {Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet"} {RepositoryPaths.VmmDll} \"$@\"\n");
        HostCommand.Checked("chmod", "755", Vmm);
    }

    /// <summary>Shared by both nodes (the host's /tmp): configs, guests, consoles.</summary>
    public string Directory { get; } = System.IO.Directory.CreateTempSubdirectory("vmm-cluster-").FullName;

    /// <summary>A vmm command both nodes can run.</summary>
    public string Vmm { get; }

    private string State => Path.Combine(Directory, "cluster");

    public void Dispose()
    {
        if (Environment.GetEnvironmentVariable("VMM_TEST_KEEP_CLUSTER") is not null) return;
        Script("down");
        System.IO.Directory.Delete(Directory, recursive: true);
    }

    /// <summary>Network namespace names of this test process's own: test runs side by side (two clones) do not meet.</summary>
    private static readonly string s_prefix = $"vmmt{Environment.ProcessId}-";

    public (int ExitCode, string Output) Script(params string[] arguments) => HostCommand.Run(
        ["env", $"VMM_CLUSTER_PREFIX={s_prefix}", $"VMM_CLUSTER_DIR={State}", Path.Combine(RepositoryPaths.Root, "scripts", "cluster.sh"), .. arguments]);

    public void Up()
    {
        var (up, output) = Script("up");
        Assert.True(up == 0, $"cluster.sh up exited {up}:\n{output}");
        Assert.Contains("Online: [ node1 node2 ]", In("node1", "crm_mon", "-1"));
    }

    /// <summary>Runs a command in a node; it must succeed.</summary>
    public string In(string node, params string[] command)
    {
        var (exitCode, output) = Script(["exec", node, .. command]);
        Assert.True(exitCode == 0, $"{string.Join(' ', command)} on {node} exited {exitCode}:\n{output}");
        return output;
    }

    public bool Answers(string node, string socket) => Script("exec", node, Vmm, "ctl", "--socket", socket, "status").ExitCode == 0;

    public string PacemakerLog(string node) => File.ReadAllText(Path.Combine(State, node, "var-log", "pacemaker", "pacemaker.log"));

    /// <summary>Waits until <paramref name="node"/>'s crm_mon shows a line matching <paramref name="pattern"/>.</summary>
    public void WaitForStatus(string node, string pattern, string what)
    {
        var clock = Stopwatch.StartNew();
        string status = "";
        while (clock.Elapsed < Patience)
        {
            status = Script("exec", node, "crm_mon", "-1").Output;
            if (Regex.IsMatch(status, pattern)) return;
            Thread.Sleep(200);
        }
        Assert.Fail($"{what}: crm_mon on {node} never matched '{pattern}':\n{status}\n--- node1\n{Tail(PacemakerLog("node1"))}\n--- node2\n{Tail(PacemakerLog("node2"))}");
    }

    private static string Tail(string log) => log.Length > 6000 ? log[^6000..] : log;

    /// <summary>The fence device of scripts/cluster.sh (the host's power switch), and fencing on.</summary>
    public void EnableFencing()
    {
        In("node1", "crm", "configure", "primitive", "fence-nodes", "stonith:fence_vmm_node", "params", "pcmk_host_list=node1 node2",
            "op", "monitor", "interval=30s");
        In("node1", "crm", "configure", "property", "stonith-enabled=true");
    }

    /// <summary>The ticking guest: dirties a little memory, checks all of it every 100 ms tick and prints the tick,
    /// forever. A page lost on the way prints a checksum mismatch and ends it.</summary>
    public string WriteTickingGuest()
    {
        var guest = new DirtyingGuestOptions(RegionMiB: 8, DirtyMiBPerSecond: 2, GuestTsc.Khz, TickMs: 100, Ticks: 0, FillRandomFirst: true);
        string kernel = Path.Combine(Directory, "ticking.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.DirtyMemoryWithChecksum(guest));
        return kernel;
    }

    public const string TickingGuestMemory = "40M";

    /// <summary>The ticks in a console, in order.</summary>
    public static List<int> Ticks(string console) =>
        Regex.Matches(console, @"tick ([0-9a-f]{8})\n").Select(m => Convert.ToInt32(m.Groups[1].Value, 16)).ToList();

    /// <summary>Waits until the console file shows a tick past <paramref name="tick"/>; returns the last tick.</summary>
    public static int WaitForTickAfter(string consoleFile, int tick, string what)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < Patience)
        {
            var ticks = File.Exists(consoleFile) ? Ticks(File.ReadAllText(consoleFile)) : [];
            if (ticks.Count > 0 && ticks[^1] > tick) return ticks[^1];
            Thread.Sleep(100);
        }
        Assert.Fail($"{what}: the console {consoleFile} shows no tick after {tick}:\n{(File.Exists(consoleFile) ? File.ReadAllText(consoleFile) : "(none)")}");
        return 0;
    }
}
