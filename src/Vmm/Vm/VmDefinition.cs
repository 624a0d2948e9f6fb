using Vmm.Devices.Virtio;

namespace Vmm.Vm;

/// <summary>A VM as <c>vmm run</c> boots it: the machine, and where its console and control socket go. It comes
/// from the command line's options or from a config file (<see cref="VmConfigFile"/>); both end in the same
/// <see cref="MachineConfig"/>.</summary>
public sealed record VmDefinition
{
    public required string Name { get; init; }
    public required string KernelPath { get; init; }
    public string? InitrdPath { get; init; }
    public string CommandLine { get; init; } = MachineConfig.DefaultCommandLine;
    public ulong MemoryBytes { get; init; } = MachineConfig.DefaultMemoryBytes;
    public int VcpuCount { get; init; } = 1;
    public IReadOnlyList<BlockDiskConfig> Disks { get; init; } = [];
    public IReadOnlyList<NetworkConfig> Networks { get; init; } = [];
    /// <summary>Where the control socket is served; null: none.</summary>
    public string? ApiSocketPath { get; init; }
    /// <summary>The file the guest's console is written to; null: stdout.</summary>
    public string? SerialLogPath { get; init; }
    public bool DirtyRing { get; init; }
    public int? DirtyRingEntries { get; init; }
    public bool HugePages { get; init; }
    public bool NestedKvmWorkarounds { get; init; } = true;

    public MachineConfig ToMachineConfig(Stream serialOutput) => new()
    {
        Name = Name,
        KernelPath = KernelPath,
        InitrdPath = InitrdPath,
        CommandLine = CommandLine,
        MemoryBytes = MemoryBytes,
        VcpuCount = VcpuCount,
        Disks = Disks,
        Networks = Networks,
        SerialOutput = serialOutput,
        NestedKvmWorkarounds = NestedKvmWorkarounds,
        HugePages = HugePages,
        DirtyRing = DirtyRing,
        DirtyRingEntries = DirtyRingEntries,
    };
}
