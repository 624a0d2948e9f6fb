using System.Text.RegularExpressions;
using Vmm.Firmware;
using Vmm.Migration;
using Vmm.Tests.EndToEnd;
using Vmm.Tests.Migration;
using Xunit;

namespace Vmm.Tests.Ocf;

/// <summary>The OCF resource agent (ocf/vm) through resource-agents' own checker, ocf-tester: its meta-data
/// against ra-api-1.dtd, then monitor, start, stop, a second start and stop, and their exit codes, on a real
/// VM (a firmware guest that spins) started from a <c>vmm run --config</c> file; and what ocf-tester cannot do, a
/// migration to a migrate-receive daemon, after which the agent finds the VM there by its name.</summary>
[Trait("Category", "Process")]
public sealed class OcfAgentTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-ocf-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    /// <summary>A config file for a firmware guest that spins, with its control socket; its name is unique, so
    /// the test finds only its own VM.</summary>
    private (string Config, string Name, string Socket) VmConfig(string? disk = null)
    {
        File.WriteAllBytes(Path.Combine(_directory, "spin.elf"), FirmwareGuests.SpinForever());
        string name = $"ocf-test-{Guid.NewGuid():N}"[..20];
        string config = Path.Combine(_directory, "vm.json");
        string disks = disk is null ? "" : $", \"disks\": [{{\"path\": \"{disk}\"}}]";
        File.WriteAllText(config, $$"""{"name": "{{name}}", "kernel": "spin.elf", "memory": "32M", "apiSocket": "vm.sock", "serialLog": "console.log"{{disks}}}""");
        return (config, name, Path.Combine(_directory, "vm.sock"));
    }

    /// <summary>The agent runs "vmm_binary run --config ..."; the tests have vmm as a dll beside them.</summary>
    private string VmmWrapper()
    {
        string vmm = Path.Combine(_directory, "vmm");
        File.WriteAllText(vmm, $"#!/bin/sh\nexec dotnet {RepositoryPaths.VmmDll} \"$@\"\n");
        HostCommand.Checked("chmod", "755", vmm);
        return vmm;
    }

    [Fact]
    public void OcfTester_PassesTheAgentOnAVmFromItsConfigFile()
    {
        var (config, name, socket) = VmConfig();
        string vmm = VmmWrapper();

        var (exitCode, output) = HostCommand.Run("ocf-tester", "-n", "vm",
            "-o", $"config={config}", "-o", $"name={name}", "-o", $"api_socket={socket}",
            "-o", $"vmm_binary={vmm}", "-o", $"state_dir={Path.Combine(_directory, "state")}",
            Path.Combine(RepositoryPaths.Root, "ocf", "vm"));

        Assert.True(exitCode == 0, $"ocf-tester exited {exitCode}:\n{output}");
        Assert.Contains("passed all tests", output);
        Assert.False(File.Exists(socket), "the VM still runs after ocf-tester's last stop");
    }

    /// <summary>Also with the agent's tls_dir and copy_disks: the migration then goes over mutual TLS and takes the
    /// VM's disk along, into the daemon's --disk-dir.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MigrateTo_MovesTheVmIntoTheMigrateReceiveDaemon_WhereMonitorAndStopFindItByName(bool tlsAndDisks)
    {
        using var certificates = new TestCertificates();
        string disk = Path.Combine(_directory, "disk.img");
        byte[] image = new byte[1 << 20];
        new Random(11).NextBytes(image);
        File.WriteAllBytes(disk, image);
        string targetDisks = Directory.CreateDirectory(Path.Combine(_directory, "target-disks")).FullName;
        var (config, name, socket) = VmConfig(tlsAndDisks ? disk : null);
        Directory.CreateDirectory(Path.Combine(_directory, "received"));
        string received = Path.Combine(_directory, "received", "{name}.sock");
        using var daemon = new RunningVmm(["migrate-receive", "--listen", "127.0.0.1:0", "--api-socket", received,
            .. tlsAndDisks ? ["--tls-dir", certificates.Good, "--disk-dir", targetDisks] : Array.Empty<string>()]);
        Match? listening = null;
        Assert.True(daemon.WaitFor((_, log) => (listening = Regex.Match(log, @"waiting for migrations on 127\.0\.0\.1:(\d+)")).Success, Patience), $"the daemon did not listen\n{daemon}");
        string[] parameters =
        [
            $"OCF_RESKEY_config={config}", $"OCF_RESKEY_name={name}", $"OCF_RESKEY_api_socket={socket}",
            $"OCF_RESKEY_vmm_binary={VmmWrapper()}", $"OCF_RESKEY_state_dir={Path.Combine(_directory, "state")}",
            $"OCF_RESKEY_received_api_socket={received}", $"OCF_RESKEY_migrate_receive_port={listening!.Groups[1].Value}",
            "OCF_RESKEY_migration_addresses=this-node=127.0.0.1", "OCF_RESKEY_CRM_meta_migrate_target=this-node",
            .. tlsAndDisks ? [$"OCF_RESKEY_tls_dir={certificates.Good}", "OCF_RESKEY_copy_disks=true"] : Array.Empty<string>(),
        ];
        (int, string) Agent(string action) => HostCommand.Run(["env", "OCF_ROOT=/usr/lib/ocf", .. parameters, Path.Combine(RepositoryPaths.Root, "ocf", "vm"), action]);

        Assert.Equal(0, Agent("start").Item1);
        var migrated = Agent("migrate_to");
        Assert.True(migrated.Item1 == 0, $"migrate_to: {migrated.Item2}\n{daemon}");
        Assert.False(File.Exists(socket), "the source vmm still serves its socket after the migration");
        if (tlsAndDisks)
        {
            Assert.Contains("mutual TLS", daemon.Log);
            Assert.Equal(image, File.ReadAllBytes(Path.Combine(targetDisks, "disk.img")));
        }

        Assert.Equal(0, Agent("migrate_from").Item1);
        Assert.Equal(0, Agent("monitor").Item1);
        Assert.Equal(0, Agent("stop").Item1);
        Assert.Equal(7, Agent("monitor").Item1);
        // Only that VM stopped: the daemon, which would take the next one, runs on.
        Assert.False(daemon.HasExited, $"the daemon exited with the VM\n{daemon}");
        Assert.Contains("stop requested on the control socket", daemon.Log);
    }

    /// <summary>A migrate_to whose commit loses its last packet leaves the VM in doubt; the agent asks the target and
    /// answers what happened: the Resumed lost, the VM runs there (success); the Commit lost, it never ran there and
    /// runs on here (failure, and the VM running).</summary>
    [Theory]
    [InlineData(MigrationFrameType.Resumed, false)]
    [InlineData(MigrationFrameType.Commit, true)]
    public void MigrateTo_InDoubt_AsksTheTargetWhereTheVmRuns(MigrationFrameType lost, bool fromSource)
    {
        var (config, name, socket) = VmConfig();
        Directory.CreateDirectory(Path.Combine(_directory, "received"));
        string received = Path.Combine(_directory, "received", "{name}.sock");
        using var daemon = new RunningVmm(["migrate-receive", "--listen", "127.0.0.1:0", "--api-socket", received]);
        Match? listening = null;
        Assert.True(daemon.WaitFor((_, log) => (listening = Regex.Match(log, @"waiting for migrations on 127\.0\.0\.1:(\d+)")).Success, Patience), $"the daemon did not listen\n{daemon}");
        using var proxy = new FrameCuttingProxy(int.Parse(listening!.Groups[1].Value), lost, fromSource);
        string[] parameters =
        [
            $"OCF_RESKEY_config={config}", $"OCF_RESKEY_name={name}", $"OCF_RESKEY_api_socket={socket}",
            $"OCF_RESKEY_vmm_binary={VmmWrapper()}", $"OCF_RESKEY_state_dir={Path.Combine(_directory, "state")}",
            $"OCF_RESKEY_received_api_socket={received}", $"OCF_RESKEY_migrate_receive_port={proxy.Address.Split(':')[1]}",
            "OCF_RESKEY_migration_addresses=this-node=127.0.0.1", "OCF_RESKEY_CRM_meta_migrate_target=this-node",
        ];
        (int, string) Agent(string action) => HostCommand.Run(["env", "OCF_ROOT=/usr/lib/ocf", .. parameters, Path.Combine(RepositoryPaths.Root, "ocf", "vm"), action]);

        Assert.Equal(0, Agent("start").Item1);
        var migrated = Agent("migrate_to");
        Assert.True(proxy.Cut, $"the link was never cut\n{migrated.Item2}\n{daemon}");
        Assert.Contains("in doubt; asking the target", migrated.Item2);
        if (!fromSource)
        {
            Assert.True(migrated.Item1 == 0, $"migrate_to: {migrated.Item2}\n{daemon}");
            Assert.False(File.Exists(socket), "the paused copy still serves its socket");
            Assert.Equal(0, Agent("migrate_from").Item1);
        }
        else
        {
            Assert.True(migrated.Item1 == 1, $"migrate_to: {migrated.Item2}\n{daemon}");
            Assert.Contains("the target never ran it", migrated.Item2);
            using var status = new RunningVmm(["ctl", "--socket", socket, "status"]);
            Assert.Equal(0, status.WaitForExit(Patience));
            Assert.Contains("\"state\":\"running\"", status.Console);
            Assert.DoesNotContain("runs here", daemon.Log);
        }
        Assert.Equal(0, Agent("stop").Item1);
        Assert.Equal(7, Agent("monitor").Item1);
    }

    private (int, string) RunAgent(string action, params string[] parameters) =>
        HostCommand.Run(["timeout", "120", "env", "OCF_ROOT=/usr/lib/ocf", .. parameters, Path.Combine(RepositoryPaths.Root, "ocf", "vm"), action]);

    /// <summary>A VM whose config file went away under it (validation fails): a probe does not call it "not running", and a
    /// stop stops it before it says so. (Both answered at once without looking, so Pacemaker could start it elsewhere
    /// while it ran here: issue 18, defect 13.)</summary>
    [Fact]
    public void ValidationFailing_WhileTheVmRuns_ProbeSaysSoAndStopStopsIt()
    {
        var (config, name, socket) = VmConfig();
        string[] parameters =
        [
            $"OCF_RESKEY_config={config}", $"OCF_RESKEY_name={name}", $"OCF_RESKEY_api_socket={socket}",
            $"OCF_RESKEY_vmm_binary={VmmWrapper()}", $"OCF_RESKEY_state_dir={Path.Combine(_directory, "state")}",
        ];
        Assert.Equal(0, RunAgent("start", parameters).Item1);
        File.Move(config, config + ".gone");

        var probe = RunAgent("monitor", parameters);
        Assert.True(probe.Item1 == 1, $"probe: {probe}");
        Assert.Contains("yet its vmm (pid", probe.Item2);
        var stop = RunAgent("stop", parameters);
        Assert.True(stop.Item1 == 0, $"stop: {stop}");
        Assert.False(File.Exists(socket), "the VM still runs after the stop");
        Assert.Equal(7, RunAgent("monitor", parameters).Item1);
    }

    /// <summary>Paths are words of their own (a space or a '*' in one changes nothing), a name that is no VM name is
    /// refused before it reaches sed, and a promotable VM needs tls_dir or an explicit insecure=true. (Paths were split,
    /// the name went into sed unchecked, and the agent chose plain TCP on its own: issue 18, defect 13.)</summary>
    [Fact]
    public void SocketPathsWithSpaces_NamesThatAreNoVmNames_AndReplicationWithoutTls()
    {
        string odd = Directory.CreateDirectory(Path.Combine(_directory, "a dir *")).FullName;
        File.WriteAllBytes(Path.Combine(odd, "spin.elf"), FirmwareGuests.SpinForever());
        string name = $"ocf-test-{Guid.NewGuid():N}"[..20];
        string config = Path.Combine(odd, "vm.json"), socket = Path.Combine(odd, "vm.sock");
        File.WriteAllText(config, $$"""{"name": "{{name}}", "kernel": "spin.elf", "memory": "32M", "apiSocket": "vm.sock"}""");
        string[] parameters =
        [
            $"OCF_RESKEY_config={config}", $"OCF_RESKEY_name={name}", $"OCF_RESKEY_api_socket={socket}",
            $"OCF_RESKEY_vmm_binary={VmmWrapper()}", $"OCF_RESKEY_state_dir={Path.Combine(_directory, "state")}",
        ];
        Assert.Equal(0, RunAgent("start", parameters).Item1);
        Assert.Equal(0, RunAgent("monitor", [.. parameters, "OCF_RESKEY_CRM_meta_interval=10000"]).Item1);
        Assert.Equal(0, RunAgent("stop", parameters).Item1);
        Assert.False(File.Exists(socket));

        var badName = RunAgent("validate-all", [parameters[0], "OCF_RESKEY_name=a/b&c", .. parameters[2..]]);
        Assert.True(badName.Item1 == 6, badName.ToString());
        Assert.Contains("is not a VM name", badName.Item2);

        string[] promotable = [.. parameters, "OCF_RESKEY_CRM_meta_promotable=true", $"OCF_RESKEY_replica_dir={_directory}"];
        var plain = RunAgent("validate-all", promotable);
        Assert.True(plain.Item1 == 6, plain.ToString());
        Assert.Contains("set tls_dir", plain.Item2);
        Assert.Equal(0, RunAgent("validate-all", [.. promotable, "OCF_RESKEY_insecure=true"]).Item1);
    }
}
