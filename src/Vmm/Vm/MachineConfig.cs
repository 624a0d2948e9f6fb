using Vmm.Kvm.Interop;

namespace Vmm.Vm;

/// <summary>Everything needed to build a VM. Validated by <see cref="Machine.Create"/>.</summary>
public sealed record MachineConfig
{
    /// <summary>What vmm passes to the kernel when the user gives no --cmdline: the serial console,
    /// reset through the keyboard controller (vmm's way to end the VM), and an immediate reset on panic
    /// so a dead guest does not hang the VMM.</summary>
    public const string DefaultCommandLine = "console=ttyS0 reboot=k panic=-1 i8042.noaux";
    public const ulong DefaultMemoryBytes = 256UL << 20;

    /// <summary>What tools call the VM (<see cref="VmName"/>); it travels with it when it migrates.</summary>
    public string Name { get; init; } = "vm";
    /// <summary>The kernel to boot; not needed to restore a saved state.</summary>
    public string? KernelPath { get; init; }
    public string? InitrdPath { get; init; }
    public string CommandLine { get; init; } = DefaultCommandLine;
    public ulong MemoryBytes { get; init; } = DefaultMemoryBytes;
    public int VcpuCount { get; init; } = 1;
    /// <summary>virtio-blk disks, in the order the guest sees them (vda, vdb, ...).</summary>
    public IReadOnlyList<Devices.Virtio.BlockDiskConfig> Disks { get; init; } = [];
    /// <summary>Where each disk's image is opened, when not at its path (null: every one at its path): an incoming
    /// migration that copies the disks writes each into an unnamed file, named only once it is complete.</summary>
    public IReadOnlyList<string>? DiskImagesOpenedAt { get; init; }
    /// <summary>virtio-net interfaces on TAP devices, in order (eth0, eth1, ...).</summary>
    public IReadOnlyList<Devices.Virtio.NetworkConfig> Networks { get; init; } = [];
    /// <summary>Where the guest's serial output goes.</summary>
    public required Stream SerialOutput { get; init; }
    /// <summary>Whether the nested-KVM adjustments may be applied when the host needs them.</summary>
    public bool NestedKvmWorkarounds { get; init; } = true;
    /// <summary>Track dirty pages for migration with per-vCPU dirty rings (KVM_CAP_DIRTY_LOG_RING) instead of
    /// the dirty log. Chosen when the VM is built: KVM enables the ring before the vCPUs exist.</summary>
    public bool DirtyRing { get; init; }
    /// <summary>Entries in each vCPU's dirty ring (a power of two); null: 64 Ki, or what KVM allows.</summary>
    public int? DirtyRingEntries { get; init; }
    /// <summary>Advise guest RAM for transparent huge pages (not RAM mapped from a snapshot's memory image).</summary>
    public bool HugePages { get; init; }
    /// <summary>Overrides the detection of the nested backend (tests); null means look at the host.</summary>
    public bool? NestedKvmHostOverride { get; init; }
    /// <summary>The CPUID each vCPU is shown, one table per vCPU, when the VM comes from elsewhere (a snapshot, a
    /// migration): the guest has seen it, so it is kept, and the VM is refused before anything is built when this
    /// host's KVM cannot offer all it shows. Null: computed from what this host's KVM supports.</summary>
    public IReadOnlyList<KvmCpuidEntry2[]>? VcpuCpuid { get; init; }
    /// <summary>Tests only: changes every vCPU's table after the check, so a VM can stand in for one that came
    /// from a host with features this one lacks.</summary>
    internal Action<KvmCpuidEntry2[]>? AdjustCpuidForTests { get; init; }
}
