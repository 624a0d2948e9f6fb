using System.Diagnostics;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.Ocf;

/// <summary>ocf:vmm:vm under a real two-node Pacemaker + Corosync cluster (scripts/cluster.sh, the nodes in namespaces
/// on this machine, a fence device that powers a node off by killing its init). The guest ticks and checks its memory
/// every tick, so its console, one file both nodes append to, shows whether it moved on where it was or started
/// over. Each step is timed into the test output. Needs root and the cluster packages (scripts/test.sh runs them).</summary>
[Trait("Category", "Cluster")]
public sealed class PacemakerClusterTests(ITestOutputHelper output) : IDisposable
{
    private readonly TestCluster _cluster = new();
    private readonly Stopwatch _step = new();

    public void Dispose() => _cluster.Dispose();

    private void Took(string step)
    {
        output.WriteLine($"{step}: {_step.Elapsed.TotalSeconds:F1} s");
        _step.Restart();
    }

    /// <summary>A VM config file the nodes share; the console goes to a shared file too.</summary>
    private (string Config, string Console) VmConfig(string name, string apiSocket, string? disk = null)
    {
        string kernel = _cluster.WriteTickingGuest();
        string console = Path.Combine(_cluster.Directory, $"{name}.console");
        string config = Path.Combine(_cluster.Directory, $"{name}.json");
        string disks = disk is null ? "" : $", \"disks\": [{{\"path\": \"{disk}\"}}]";
        File.WriteAllText(config, $$"""{"name": "{{name}}", "kernel": "{{kernel}}", "memory": "{{TestCluster.TickingGuestMemory}}", "apiSocket": "{{apiSocket}}", "serialLog": "{{console}}"{{disks}}}""");
        return (config, console);
    }

    /// <summary>The console moved on without going back: every tick once, in order, each one more than the last.</summary>
    private static void AssertTicksContinued(string console, int fromLine = 0)
    {
        var ticks = TestCluster.Ticks(string.Concat(File.ReadAllText(console).Split('\n').Skip(fromLine).Select(l => l + "\n")));
        for (int i = 1; i < ticks.Count; i++)
            Assert.True(ticks[i] == ticks[i - 1] + 1, $"tick {ticks[i]:x8} followed tick {ticks[i - 1]:x8}:\n{File.ReadAllText(console)}");
        Assert.DoesNotContain("mismatch", File.ReadAllText(console));
    }

    [Fact]
    public void PlainVm_MovesLiveToTheOtherNodeAndBack_AndRestartsFromDiskWhenItsNodeIsKilled()
    {
        _step.Start();
        _cluster.Up();
        Took("cluster up, both nodes online");

        // resource-agents' checker, on a node of the cluster.
        var (testerConfig, _) = VmConfig("tester", "/run/vmm/tester.sock");
        string tester = _cluster.In("node1", "ocf-tester", "-n", "tester", "-o", $"config={testerConfig}", "-o", "name=tester",
            "-o", "api_socket=/run/vmm/tester.sock", "-o", $"vmm_binary={_cluster.Vmm}", "/usr/lib/ocf/resource.d/vmm/vm");
        Assert.Contains("passed all tests", tester);
        Took("ocf-tester on node1");

        // The socket under the node's private /run: a path on the shared file system would answer on both nodes.
        var (config, console) = VmConfig("tick1", "/run/vmm/tick1.sock");
        _cluster.In("node1", "crm", "configure", "primitive", "vmm-receive", "ocf:heartbeat:anything", "params", $"binfile={_cluster.Vmm}",
            $"cmdline_options=migrate-receive --listen 0.0.0.0:7000 --insecure --api-socket /run/vmm/received/{{name}}.sock --serial-log {_cluster.Directory}/{{name}}.console --control-socket /run/vmm/receive.sock",
            "op", "monitor", "interval=10s");
        _cluster.In("node1", "crm", "configure", "clone", "vmm-receive-clone", "vmm-receive");
        _cluster.In("node1", "crm", "configure", "primitive", "tick1", "ocf:vmm:vm", "params", $"config={config}", "name=tick1",
            "api_socket=/run/vmm/tick1.sock", $"vmm_binary={_cluster.Vmm}", "received_api_socket=/run/vmm/received/{name}.sock",
            "migrate_receive_port=7000", "migration_addresses=node1=10.77.0.1 node2=10.77.0.2", "meta", "allow-migrate=true",
            "op", "monitor", "interval=10s", "timeout=20s", "op", "start", "timeout=60s", "op", "migrate_to", "timeout=120s");
        _cluster.In("node1", "crm", "configure", "location", "tick1-prefers-node1", "tick1", "10:", "node1");
        _cluster.In("node1", "crm", "configure", "order", "receive-before-tick1", "Mandatory:", "vmm-receive-clone", "tick1");
        _cluster.WaitForStatus("node1", @"tick1\s+\(ocf:vmm:vm\):\s+Started node1", "tick1 did not start on node1");
        Assert.True(_cluster.Answers("node1", "/run/vmm/tick1.sock"));
        Assert.False(_cluster.Answers("node2", "/run/vmm/tick1.sock"));
        int tick = TestCluster.WaitForTickAfter(console, 2, "the guest on node1");
        Took("configured, tick1 started on node1 and ticking");

        _cluster.In("node1", "crm_resource", "--move", "--resource", "tick1", "--node", "node2");
        _cluster.WaitForStatus("node1", @"tick1\s+\(ocf:vmm:vm\):\s+Started node2", "tick1 did not move to node2");
        Took("crm_resource --move to node2, until Started node2");
        Assert.True(_cluster.Answers("node2", "/run/vmm/received/tick1.sock"));
        Assert.Contains("Result of migrate_to operation for tick1 on node1: ok", _cluster.PacemakerLog("node1"));
        Assert.Contains("Result of migrate_from operation for tick1 on node2: ok", _cluster.PacemakerLog("node2"));
        Assert.DoesNotContain("start operation for tick1 on node2", _cluster.PacemakerLog("node2"));
        Assert.False(_cluster.Answers("node1", "/run/vmm/tick1.sock"));
        tick = TestCluster.WaitForTickAfter(console, tick + 2, "the guest on node2");
        AssertTicksContinued(console);

        _cluster.In("node1", "crm_resource", "--move", "--resource", "tick1", "--node", "node1");
        _cluster.WaitForStatus("node1", @"tick1\s+\(ocf:vmm:vm\):\s+Started node1", "tick1 did not move back to node1");
        Took("crm_resource --move back to node1, until Started node1");
        Assert.True(_cluster.Answers("node1", "/run/vmm/received/tick1.sock"));
        Assert.Contains("\"vms\":[]", _cluster.In("node2", _cluster.Vmm, "ctl", "--socket", "/run/vmm/receive.sock", "list"));
        tick = TestCluster.WaitForTickAfter(console, tick + 2, "the guest back on node1");
        AssertTicksContinued(console);
        // node1 dies: once fenced, Pacemaker starts the VM on node2 from its disk (a new boot: "ready" again).
        _cluster.In("node1", "crm_resource", "--clear", "--resource", "tick1");
        _cluster.EnableFencing();
        _cluster.WaitForStatus("node2", @"fence-nodes\s+\(stonith:fence_vmm_node\):\s+Started", "the fence device did not start");
        Took("fencing configured");
        _cluster.Script("kill", "node1");
        _cluster.WaitForStatus("node2", @"tick1\s+\(ocf:vmm:vm\):\s+Started node2", "tick1 did not restart on node2");
        Took("node1 killed, until tick1 Started node2");
        Assert.Contains("reboot of node1 successful", _cluster.In("node2", "stonith_admin", "--history", "node1"));
        Assert.Contains("Result of start operation for tick1 on node2: ok", _cluster.PacemakerLog("node2"));
        TestCluster.WaitForTickAfter(console, 1, "the guest booted again on node2");
        // A line the guest had half written on node1 ends where the new boot's "ready" begins.
        string text = File.ReadAllText(console);
        string restarted = text[(text.LastIndexOf("ready\n", StringComparison.Ordinal) + "ready\n".Length)..];
        Assert.True(text.LastIndexOf("ready\n", StringComparison.Ordinal) > 0, $"no new boot on node2:\n{text}");
        Assert.Equal(1, TestCluster.Ticks(restarted)[0]);
        AssertTicksContinued(console, text[..text.LastIndexOf("ready\n", StringComparison.Ordinal)].Split('\n').Length);
    }

    /// <summary>The VM protected by a standby on the other node, as a promotable clone: Pacemaker boots it from its
    /// disk on node1 and starts the standby on node2; node1 killed and fenced, node2 is promoted and resumes the VM
    /// from its replica, the console going on from the last tick let out, not one twice; node1 back, it becomes the
    /// standby; moving the promoted role back hands the VM over without a tick lost.</summary>
    [Fact]
    public void ReplicatedVm_PromotesTheStandbyWhenThePrimaryNodeIsKilled_ThenHandsBackOnAMove()
    {
        _step.Start();
        _cluster.Up();
        _cluster.EnableFencing();
        Took("cluster up, fencing configured");

        var (image, console) = ConfigureReplicatedVm("tick2", "node1=10.77.0.1 node2=10.77.0.2", fenceTimeoutS: 30);
        _cluster.WaitForStatus("node1", @"Promoted: \[ node1 \]", "tick2 was not promoted on node1");
        _cluster.WaitForStatus("node1", @"Unpromoted: \[ node2 \]", "no standby of tick2 on node2");
        WaitUntilProtected("node1", "/run/vmm/tick2.sock");
        int tick = TestCluster.WaitForTickAfter(console, 2, "the guest on node1");
        Took("tick2 promoted on node1 (booted from disk) and protected by node2's standby");

        _cluster.Script("kill", "node1");
        _cluster.WaitForStatus("node2", @"Promoted: \[ node2 \]", "node2 was not promoted");
        Took("node1 killed, until node2 promoted (fenced, resumed from the replica)");
        Assert.Contains("reboot of node1 successful", _cluster.In("node2", "stonith_admin", "--history", "node1"));
        Assert.Contains("\"name\":\"tick2\"", _cluster.In("node2", _cluster.Vmm, "ctl", "--socket", "/run/resource-agents/vmm/tick2.standby.sock", "status"));
        tick = TestCluster.WaitForTickAfter(console, tick + 2, "the guest resumed on node2");
        AssertTicksContinued(console);
        _cluster.In("node2", "cmp", image, "/run/vmm/replica/disk.img");

        _cluster.Script("start", "node1");
        _cluster.WaitForStatus("node2", @"Unpromoted: \[ node1 \]", "node1 did not come back as the standby");
        WaitUntilProtected("node2", "/run/resource-agents/vmm/tick2.standby.sock");
        Took("node1 started again, until the VM on node2 is protected by node1's standby");

        _cluster.In("node2", "crm_resource", "--move", "--resource", "tick2-ha", "--node", "node1", "--promoted");
        _cluster.WaitForStatus("node2", @"Promoted: \[ node1 \]", "the promoted role did not move back to node1");
        _cluster.WaitForStatus("node2", @"Unpromoted: \[ node2 \]", "node2 did not become the standby");
        Took("crm_resource --move --promoted to node1 (handover), until node1 promoted");
        Assert.Contains("Result of demote operation for tick2 on node2: ok", _cluster.PacemakerLog("node2"));
        WaitUntilProtected("node1", "/run/resource-agents/vmm/tick2.standby.sock");
        Took("until node2's standby protects it again");
        TestCluster.WaitForTickAfter(console, tick + 2, "the guest handed back to node1");
        AssertTicksContinued(console);
    }

    /// <summary>Issue 18's lost standby, in the cluster: the standby's node killed, fenced and started again, its new
    /// standby protects the VM again (the primary knocks at its address while it holds its output, rather than wait
    /// out the hold), and then the VM's node is killed: node2 is promoted and resumes the VM from the new replica, its
    /// console going on from the last tick let out, not one twice. (The VM came back booted from disk, its running
    /// state lost, although a standby had been back for 20 s.)</summary>
    [Fact]
    public void ReplicatedVm_StandbysNodeKilledAndBack_IsProtectedAgain_ThenItsOwnNodeKilled_ResumesFromTheNewReplica()
    {
        _step.Start();
        _cluster.Up();
        _cluster.EnableFencing();
        var (_, console) = ConfigureReplicatedVm("tick4", "node1=10.77.0.1 node2=10.77.0.2", fenceTimeoutS: 30);
        _cluster.WaitForStatus("node1", @"Promoted: \[ node1 \]", "tick4 was not promoted on node1");
        _cluster.WaitForStatus("node1", @"Unpromoted: \[ node2 \]", "no standby of tick4 on node2");
        WaitUntilProtected("node1", "/run/vmm/tick4.sock");
        int tick = TestCluster.WaitForTickAfter(console, 2, "the guest on node1");
        Took("tick4 promoted on node1 and protected by node2's standby");

        _cluster.Script("kill", "node2");
        WaitUntil(() => _cluster.Script("exec", "node1", "stonith_admin", "--history", "node2").Output.Contains("reboot of node2 successful"), "node2 to be fenced");
        _cluster.Script("start", "node2");
        _cluster.WaitForStatus("node1", @"Unpromoted: \[ node2 \]", "node2 did not come back as the standby");
        WaitUntilProtected("node1", "/run/vmm/tick4.sock");
        Took("node2 killed, fenced and started again, until its new standby protects the VM");
        tick = TestCluster.WaitForTickAfter(console, tick + 2, "the guest on node1, protected again");

        _cluster.Script("kill", "node1");
        _cluster.WaitForStatus("node2", @"Promoted: \[ node2 \]", "node2 was not promoted");
        Took("node1 killed, until node2 promoted (resumed from the new replica)");
        Assert.Contains("\"name\":\"tick4\"", _cluster.In("node2", _cluster.Vmm, "ctl", "--socket", "/run/resource-agents/vmm/tick4.standby.sock", "status"));
        TestCluster.WaitForTickAfter(console, tick + 2, "the guest resumed on node2");
        AssertTicksContinued(console);
    }

    /// <summary>A replicated VM as a promotable clone, preferring node1, its disk in each node's replica_dir (its
    /// private /run here): node1 has it, node2 gets the replica. Returns the image's original and the console.</summary>
    private (string Image, string Console) ConfigureReplicatedVm(string name, string addresses, int fenceTimeoutS)
    {
        string image = Path.Combine(_cluster.Directory, $"{name}.img");
        File.WriteAllBytes(image, RandomBytes(1 << 20));
        _cluster.In("node1", "sh", "-c", $"mkdir -p /run/vmm/replica && cp {image} /run/vmm/replica/disk.img");
        var (config, console) = VmConfig(name, $"/run/vmm/{name}.sock", disk: "/run/vmm/replica/disk.img");
        // In one go: a primitive committed alone would start as a plain VM before the clone makes it promotable.
        string crm = Path.Combine(_cluster.Directory, $"{name}.crm");
        File.WriteAllText(crm, $"""
            primitive {name} ocf:vmm:vm \
                params config="{config}" name={name} api_socket=/run/vmm/{name}.sock vmm_binary="{_cluster.Vmm}" \
                    replica_dir=/run/vmm/replica replication_port=7100 migration_addresses="{addresses}" insecure=true \
                    failover_timeout_ms=1000 fence_timeout_s={fenceTimeoutS} standby_serial_log="{console}" \
                op monitor interval=9s role=Promoted timeout=30s op monitor interval=11s role=Unpromoted timeout=20s \
                op start timeout=60s op promote timeout=90s op demote timeout=90s op notify timeout=60s
            clone {name}-ha {name} meta promotable=true promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
            location {name}-promoted-on-node1 {name}-ha rule role=Promoted 50: #uname eq node1
            """);
        _cluster.In("node1", "crm", "configure", "load", "update", crm);
        return (image, console);
    }

    /// <summary>A replica its primary outran is not resumed: the link between the VM and its standby is cut
    /// (corosync's stays), the VM runs on without it, and the agent records in the CIB that the replica is outdated
    /// (before the VM's output hold ends); node1 killed and fenced, Pacemaker leaves the VM stopped rather than resume
    /// it on node2, until an operator says to (the README's command), and then it does.</summary>
    [Fact]
    public void ReplicatedVm_ThatRanOnWithoutItsStandby_IsNotResumedFromTheOutdatedReplica_UntilAnOperatorSaysSo()
    {
        _step.Start();
        _cluster.Up();
        _cluster.EnableFencing();
        // Replication on addresses of its own, so that cutting it leaves corosync's link alone.
        _cluster.In("node1", "ip", "addr", "add", "10.77.0.11/24", "dev", "eth0");
        _cluster.In("node2", "ip", "addr", "add", "10.77.0.12/24", "dev", "eth0");
        ConfigureReplicatedVm("tick3", "node1=10.77.0.11 node2=10.77.0.12", fenceTimeoutS: 3);
        _cluster.WaitForStatus("node1", @"Promoted: \[ node1 \]", "tick3 was not promoted on node1");
        WaitUntilProtected("node1", "/run/vmm/tick3.sock");
        Took("cluster up, tick3 promoted on node1 and protected by node2's standby");

        _cluster.In("node1", "ip", "route", "add", "blackhole", "10.77.0.12/32");
        _cluster.In("node2", "ip", "route", "add", "blackhole", "10.77.0.11/32");
        WaitUntil(() => _cluster.Script("exec", "node1", "crm_attribute", "--type", "crm_config", "--name", "vmm-tick3-replica-current", "--query", "--quiet").Output.Trim() == "false",
            "the agent to record that tick3's replica is outdated");
        WaitUntil(() => _cluster.Script("exec", "node1", "crm_attribute", "--node", "node2", "--name", "master-tick3", "--lifetime", "reboot", "--query", "--quiet").ExitCode != 0,
            "node2's promotion score to go");
        Assert.Contains("\"phase\":\"primary-lost\"", _cluster.In("node2", _cluster.Vmm, "ctl", "--socket", "/run/resource-agents/vmm/tick3.standby.sock", "status"));
        Took("replication cut, until node2's replica counts as outdated");

        _cluster.Script("kill", "node1");
        WaitUntil(() => _cluster.Script("exec", "node2", "stonith_admin", "--history", "node1").Output.Contains("reboot of node1 successful"), "node1 to be fenced");
        _cluster.In("node2", "crm_resource", "--wait", "--timeout", "60s");
        string status = _cluster.In("node2", "crm_mon", "-1");
        Took("node1 killed, until fenced and the cluster settled");
        Assert.Contains("Unpromoted: [ node2 ]", status);
        Assert.DoesNotContain("Promoted: [", status.Replace("Unpromoted: [", ""));
        Assert.DoesNotContain("promote operation for tick3 on node2", _cluster.PacemakerLog("node2"));
        Assert.Contains("\"phase\":\"primary-lost\"", _cluster.In("node2", _cluster.Vmm, "ctl", "--socket", "/run/resource-agents/vmm/tick3.standby.sock", "status"));

        _cluster.In("node2", "crm_attribute", "--type", "crm_config", "--name", "vmm-tick3-replica-current", "--update", "true");
        _cluster.WaitForStatus("node2", @"Promoted: \[ node2 \]", "the operator's word did not promote node2");
        Took("the operator marks the replica current, until node2 promoted");
        Assert.Contains("\"name\":\"tick3\"", _cluster.In("node2", _cluster.Vmm, "ctl", "--socket", "/run/resource-agents/vmm/tick3.standby.sock", "status"));
    }

    private static void WaitUntil(Func<bool> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TestCluster.Patience)
        {
            if (condition()) return;
            Thread.Sleep(300);
        }
        Assert.Fail($"timed out waiting for {what}");
    }

    private static byte[] RandomBytes(int count)
    {
        var bytes = new byte[count];
        new Random(20261202).NextBytes(bytes);
        return bytes;
    }

    /// <summary>Waits until the VM on <paramref name="node"/> is protected by its standby, and the agent has recorded
    /// so in the CIB (until then, a replica does not count as current).</summary>
    private void WaitUntilProtected(string node, string socket)
    {
        string name = Path.GetFileName(socket).Split('.')[0];
        WaitUntil(() => _cluster.Script("exec", node, "crm_attribute", "--type", "crm_config", "--name", $"vmm-{name}-replica-current", "--query", "--quiet").Output.Trim() == "true",
            $"the agent to record that {name}'s replica is current");
        var clock = Stopwatch.StartNew();
        string status = "";
        while (clock.Elapsed < TestCluster.Patience)
        {
            status = _cluster.Script("exec", node, _cluster.Vmm, "ctl", "--socket", socket, "status").Output;
            if (status.Contains("\"replication\":{\"state\":\"protected\"")) return;
            Thread.Sleep(300);
        }
        Assert.Fail($"the VM on {node} is not protected: {status}\n{_cluster.PacemakerLog(node)[^4000..]}");
    }
}
