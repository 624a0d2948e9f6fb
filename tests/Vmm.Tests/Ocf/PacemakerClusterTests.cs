using System.Diagnostics;
using Vmm.Firmware;
using Vmm.Tests.EndToEnd;
using Xunit;

namespace Vmm.Tests.Ocf;

/// <summary>ocf:vmm:vm under a real two-node Pacemaker + Corosync cluster (scripts/cluster.sh, the nodes in
/// namespaces on this machine): Pacemaker starts a VM, <c>crm_resource --move</c> migrates it live to the other
/// node (migrate_to, migrate_from, stop, and no start there) and back. Needs root and the cluster packages;
/// about 25 s (scripts/test.sh runs it with the rest).</summary>
[Trait("Category", "Cluster")]
public sealed class PacemakerClusterTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-cluster-").FullName;
    private string State => Path.Combine(_directory, "cluster");

    public void Dispose()
    {
        Cluster("down");
        Directory.Delete(_directory, recursive: true);
    }

    /// <summary>scripts/cluster.sh with its own namespaces and state directory, apart from a cluster run by hand.</summary>
    private (int ExitCode, string Output) Cluster(params string[] arguments) => HostCommand.Run(
        ["env", "VMM_CLUSTER_PREFIX=vmmtest-", $"VMM_CLUSTER_DIR={State}", Path.Combine(RepositoryPaths.Root, "scripts", "cluster.sh"), .. arguments]);

    private string InNode(string node, params string[] command)
    {
        var (exitCode, output) = Cluster(["exec", node, .. command]);
        Assert.True(exitCode == 0, $"{string.Join(' ', command)} on {node} exited {exitCode}:\n{output}");
        return output;
    }

    private string PacemakerLog(string node) => File.ReadAllText(Path.Combine(State, node, "var-log", "pacemaker", "pacemaker.log"));

    private void WaitUntilStartedOn(string node)
    {
        var clock = Stopwatch.StartNew();
        string status = "";
        while (clock.Elapsed < Patience)
        {
            status = Cluster("exec", "node1", "crm_mon", "-1").Output;
            if (status.Contains($"(ocf:vmm:vm):\t Started {node}")) return;
            Thread.Sleep(200);
        }
        Assert.Fail($"spin1 did not start on {node}:\n{status}\n{PacemakerLog("node1")}");
    }

    [Fact]
    public void PacemakerStartsTheVm_AndMovesItLiveToTheOtherNodeAndBack()
    {
        File.WriteAllBytes(Path.Combine(_directory, "spin.elf"), FirmwareGuests.SpinForever());
        string config = Path.Combine(_directory, "vm.json");
        // The socket under the node's private /run: a path on the shared file system would answer on both nodes.
        File.WriteAllText(config, """{"name": "spin1", "kernel": "spin.elf", "memory": "32M", "apiSocket": "/run/vmm/spin1.sock", "serialLog": "console.log"}""");
        string vmm = Path.Combine(_directory, "vmm");
        File.WriteAllText(vmm, $"#!/bin/sh\nexec {Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet"} {RepositoryPaths.VmmDll} \"$@\"\n");
        HostCommand.Checked("chmod", "755", vmm);

        var (up, upOutput) = Cluster("up");
        Assert.True(up == 0, $"cluster.sh up exited {up}:\n{upOutput}");
        Assert.Contains("Online: [ node1 node2 ]", InNode("node1", "crm_mon", "-1"));

        InNode("node1", "crm", "configure", "primitive", "vmm-receive", "ocf:heartbeat:anything", "params", $"binfile={vmm}",
            "cmdline_options=migrate-receive --listen 0.0.0.0:7000 --insecure --api-socket /run/vmm/received/{name}.sock --control-socket /run/vmm/receive.sock",
            "op", "monitor", "interval=10s");
        InNode("node1", "crm", "configure", "clone", "vmm-receive-clone", "vmm-receive");
        InNode("node1", "crm", "configure", "primitive", "spin1", "ocf:vmm:vm", "params", $"config={config}", "name=spin1",
            "api_socket=/run/vmm/spin1.sock", $"vmm_binary={vmm}", "received_api_socket=/run/vmm/received/{name}.sock",
            "migrate_receive_port=7000", "migration_addresses=node1=10.77.0.1 node2=10.77.0.2", "meta", "allow-migrate=true",
            "op", "monitor", "interval=10s", "timeout=20s", "op", "start", "timeout=60s", "op", "migrate_to", "timeout=120s");
        InNode("node1", "crm", "configure", "location", "spin1-prefers-node1", "spin1", "10:", "node1");
        InNode("node1", "crm", "configure", "order", "receive-before-spin1", "Mandatory:", "vmm-receive-clone", "spin1");
        WaitUntilStartedOn("node1");
        Assert.Contains("\"name\":\"spin1\"", InNode("node1", vmm, "ctl", "--socket", "/run/vmm/spin1.sock", "status"));
        Assert.NotEqual(0, Cluster("exec", "node2", vmm, "ctl", "--socket", "/run/vmm/spin1.sock", "status").ExitCode);

        InNode("node1", "crm_resource", "--move", "--resource", "spin1", "--node", "node2");
        WaitUntilStartedOn("node2");
        Assert.Contains("\"name\":\"spin1\"", InNode("node2", vmm, "ctl", "--socket", "/run/vmm/received/spin1.sock", "status"));
        Assert.Contains("Result of migrate_to operation for spin1 on node1: ok", PacemakerLog("node1"));
        Assert.Contains("Result of migrate_from operation for spin1 on node2: ok", PacemakerLog("node2"));
        Assert.DoesNotContain("start operation for spin1 on node2", PacemakerLog("node2"));
        Assert.NotEqual(0, Cluster("exec", "node1", vmm, "ctl", "--socket", "/run/vmm/spin1.sock", "status").ExitCode);

        InNode("node1", "crm_resource", "--move", "--resource", "spin1", "--node", "node1");
        WaitUntilStartedOn("node1");
        Assert.Contains("\"name\":\"spin1\"", InNode("node1", vmm, "ctl", "--socket", "/run/vmm/received/spin1.sock", "status"));
        Assert.Contains("Result of migrate_from operation for spin1 on node1: ok", PacemakerLog("node1"));
        Assert.Contains("\"vms\":[]", InNode("node2", vmm, "ctl", "--socket", "/run/vmm/receive.sock", "list"));
    }
}
