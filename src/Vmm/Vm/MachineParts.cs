using Vmm.Boot;
using Vmm.Devices;
using Vmm.Kvm;
using Vmm.Kvm.Interop;
using Vmm.Memory;

namespace Vmm.Vm;

/// <summary>What <see cref="MachineBuilder"/> made and a <see cref="Machine"/> runs: the KVM objects, guest RAM,
/// the buses and devices, and the vCPUs. It owns them all and releases them in the order they depend on
/// each other (devices before the VM, the VM before RAM and /dev/kvm).</summary>
internal sealed class MachineParts : IDisposable
{
    public required MachineConfig Config { get; init; }
    public required KvmSystem Kvm { get; init; }
    public required KvmVm Vm { get; init; }
    public required GuestMemory Memory { get; init; }
    public required DeviceBus IoPorts { get; init; }
    public required DeviceBus Mmio { get; init; }
    public required EventLoop EventLoop { get; init; }
    public required VirtioMmioDevices Virtio { get; init; }
    /// <summary>The virtio-blk devices, in the order of <see cref="MachineConfig.Disks"/> (owned by <see cref="Virtio"/>).</summary>
    public required IReadOnlyList<Devices.Virtio.VirtioBlock> Disks { get; init; }
    public required Serial8250 Serial { get; init; }
    /// <summary>What the guest sends outside (console, TAP frames) passes through it; replication holds it per epoch.</summary>
    public required GuestOutputGate Output { get; init; }
    public required IReadOnlyList<IStatefulDevice> Devices { get; init; }
    public required List<KvmVcpu> Vcpus { get; init; }
    /// <summary>The CPUID each vCPU shows its guest, read back from KVM once it was set.</summary>
    public required IReadOnlyList<KvmCpuidEntry2[]> VcpuCpuid { get; init; }
    /// <summary>The vCPUs' dirty rings (empty with the dirty log); also the lock their harvesters take.</summary>
    public required List<KvmDirtyRing> DirtyRings { get; init; }
    public required VmStopLatch Stop { get; init; }
    public required VcpuStateSupport StateSupport { get; init; }
    public required BootSetup? Boot { get; init; }
    public required bool HandleNestedEmulationFailures { get; init; }

    public void Dispose()
    {
        EventLoop.Dispose();
        Virtio.Dispose();
        foreach (var ring in DirtyRings) ring.Dispose();
        foreach (var vcpu in Vcpus) vcpu.Dispose();
        Vm.Dispose();
        Memory.Dispose();
        Kvm.Dispose();
        Stop.Dispose();
    }
}
