using Vmm.Devices.Virtio;

namespace Vmm.State;

/// <summary>What a VM is made of, as far as another vmm needs to know to build the same one before
/// loading its state: RAM size, vCPUs, and the disks and TAPs in the order the guest found them. Disk
/// images are opened by path on the restoring host (shared storage for a migration).</summary>
public sealed record MachineDescription(ulong MemoryBytes, int VcpuCount, IReadOnlyList<BlockDiskConfig> Disks, IReadOnlyList<NetworkConfig> Networks)
{
    private const int MaxDevices = 64;

    public void Write(StateWriter w)
    {
        w.WriteUInt64(MemoryBytes);
        w.WriteUInt32((uint)VcpuCount);
        w.WriteUInt32((uint)Disks.Count);
        foreach (var disk in Disks)
        {
            w.WriteString(disk.Path);
            w.WriteBool(disk.ReadOnly);
            w.WriteOptionalString(disk.Id);
        }
        w.WriteUInt32((uint)Networks.Count);
        foreach (var net in Networks)
        {
            w.WriteString(net.TapName);
            w.WriteBytes(net.Mac);
        }
    }

    public static MachineDescription Read(StateReader r)
    {
        ulong memoryBytes = r.ReadUInt64("memory size");
        int vcpus = r.ReadCount("vCPU count", Vm.Machine.MaxVcpus);
        if (vcpus == 0) throw new StateFormatException("vCPU count: 0");
        if (memoryBytes % Memory.GuestMemoryRegion.PageSize != 0 || memoryBytes < Arch.X86Layout.MinimumMemoryBytes || memoryBytes > MaxMemoryBytes)
            throw new StateFormatException($"memory size {memoryBytes} is not a page multiple between {Arch.X86Layout.MinimumMemoryBytes} and {MaxMemoryBytes}");
        var disks = new BlockDiskConfig[r.ReadCount("disk count", MaxDevices)];
        for (int i = 0; i < disks.Length; i++)
            disks[i] = new BlockDiskConfig(r.ReadString("disk path"), r.ReadBool("disk read-only"), r.ReadOptionalString("disk id", BlockDiskConfig.MaxIdBytes));
        var networks = new NetworkConfig[r.ReadCount("network count", MaxDevices)];
        for (int i = 0; i < networks.Length; i++)
        {
            string tap = r.ReadString("TAP name", 15);
            byte[] mac = r.ReadBytes("MAC address", 6);
            if (mac.Length != 6) throw new StateFormatException("MAC address: not 6 bytes");
            networks[i] = new NetworkConfig(tap, mac);
        }
        return new MachineDescription(memoryBytes, vcpus, disks, networks);
    }

    /// <summary>1 TiB: far above what vmm's memory layout places, and a bound on what a stream may ask for.</summary>
    public const ulong MaxMemoryBytes = 1UL << 40;

    public bool SameAs(MachineDescription other) =>
        MemoryBytes == other.MemoryBytes && VcpuCount == other.VcpuCount
        && Disks.SequenceEqual(other.Disks)
        && Networks.Count == other.Networks.Count
        && Networks.Zip(other.Networks).All(p => p.First.TapName == p.Second.TapName && p.First.Mac.AsSpan().SequenceEqual(p.Second.Mac));
}
