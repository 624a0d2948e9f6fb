using Vmm.Firmware;
using Vmm.Tests.EndToEnd;
using Xunit;

namespace Vmm.Tests.Ocf;

/// <summary>The OCF resource agent (ocf/vm) through resource-agents' own checker, ocf-tester: its meta-data
/// against ra-api-1.dtd, then monitor, start, stop, a second start and stop, and their exit codes, on a real
/// VM (a firmware guest that spins) started from a <c>vmm run --config</c> file.</summary>
[Trait("Category", "Process")]
public sealed class OcfAgentTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-ocf-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void OcfTester_PassesTheAgentOnAVmFromItsConfigFile()
    {
        File.WriteAllBytes(Path.Combine(_directory, "spin.elf"), FirmwareGuests.SpinForever());
        string name = $"ocf-test-{Guid.NewGuid():N}"[..20];
        string socket = Path.Combine(_directory, "vm.sock");
        string config = Path.Combine(_directory, "vm.json");
        File.WriteAllText(config, $$"""{"name": "{{name}}", "kernel": "spin.elf", "memory": "32M", "apiSocket": "vm.sock", "serialLog": "console.log"}""");
        // The agent runs "vmm_binary run --config ..."; the tests have vmm as a dll beside them.
        string vmm = Path.Combine(_directory, "vmm");
        File.WriteAllText(vmm, $"#!/bin/sh\nexec dotnet {RepositoryPaths.VmmDll} \"$@\"\n");
        HostCommand.Checked("chmod", "755", vmm);

        var (exitCode, output) = HostCommand.Run("ocf-tester", "-n", "vm",
            "-o", $"config={config}", "-o", $"name={name}", "-o", $"api_socket={socket}",
            "-o", $"vmm_binary={vmm}", "-o", $"state_dir={Path.Combine(_directory, "state")}",
            Path.Combine(RepositoryPaths.Root, "ocf", "vm"));

        Assert.True(exitCode == 0, $"ocf-tester exited {exitCode}:\n{output}");
        Assert.Contains("passed all tests", output);
        Assert.False(File.Exists(socket), "the VM still runs after ocf-tester's last stop");
    }
}
