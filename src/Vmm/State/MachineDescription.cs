using Vmm.Arch;
using Vmm.Devices.Virtio;
using Vmm.Kvm;
using Vmm.Kvm.Interop;
using Vmm.Memory;
using Vmm.Serialization;
using Vmm.Vm;

namespace Vmm.State;

/// <summary>What a VM is made of, as far as another vmm needs to know to build the same one before
/// loading its state: RAM size, vCPUs and the CPUID each one shows its guest, and the disks and TAPs in the
/// order the guest found them. Disk images are opened by path on the restoring host (shared storage for a
/// migration). It may come from a hostile peer: every count, size, path and name is checked on reading.</summary>
public sealed record MachineDescription(ulong MemoryBytes, int VcpuCount, IReadOnlyList<BlockDiskConfig> Disks, IReadOnlyList<NetworkConfig> Networks)
{
    private const int MaxDevices = 64;
    private const int MaxPathBytes = 4096;

    /// <summary>1 TiB: far above what vmm's memory layout places, and a bound on what a stream may ask for.</summary>
    public const ulong MaxMemoryBytes = 1UL << 40;

    /// <summary>The CPUID each vCPU showed its guest, one table per vCPU; null in a state written before vmm
    /// saved it (format version 1 and 2), and then a restore computes it from this host's KVM as it did then.</summary>
    public IReadOnlyList<KvmCpuidEntry2[]>? VcpuCpuid { get; init; }

    /// <summary>The machine's shape, without its CPUID (which only the built machine's vCPUs know).</summary>
    public static MachineDescription Of(MachineConfig config) => new(config.MemoryBytes, config.VcpuCount, config.Disks, config.Networks);

    /// <summary>This host's settings (console, dirty tracking, workarounds) for the machine described here.</summary>
    public MachineConfig ToConfig(MachineConfig hostSettings) =>
        hostSettings with { MemoryBytes = MemoryBytes, VcpuCount = VcpuCount, Disks = Disks, Networks = Networks, VcpuCpuid = VcpuCpuid };

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
        w.WriteBool(VcpuCpuid is not null);
        if (VcpuCpuid is null) return;
        if (VcpuCpuid.Count != VcpuCount) throw new ArgumentException($"CPUID for {VcpuCpuid.Count} vCPUs in a description of {VcpuCount}");
        foreach (var table in VcpuCpuid) w.WriteStructs<KvmCpuidEntry2>(table);
    }

    /// <param name="withCpuid">Whether the encoding has the CPUID part: false for states of format versions 1 and 2.</param>
    public static MachineDescription Read(StateReader r, bool withCpuid = true)
    {
        ulong memoryBytes = r.ReadUInt64("memory size");
        int vcpus = r.ReadCount("vCPU count", X86Layout.MaxVcpus);
        if (vcpus == 0) throw new StateFormatException("vCPU count: 0");
        if (memoryBytes % GuestMemoryRegion.PageSize != 0 || memoryBytes < X86Layout.MinimumMemoryBytes || memoryBytes > MaxMemoryBytes)
            throw new StateFormatException($"memory size {memoryBytes} is not a page multiple between {X86Layout.MinimumMemoryBytes} and {MaxMemoryBytes}");
        var disks = new BlockDiskConfig[r.ReadCount("disk count", MaxDevices)];
        for (int i = 0; i < disks.Length; i++)
        {
            string path = CheckedText(r.ReadString("disk path", MaxPathBytes), "disk path");
            bool readOnly = r.ReadBool("disk read-only");
            string? id = r.ReadOptionalString("disk id", BlockDiskConfig.MaxIdBytes);
            disks[i] = new BlockDiskConfig(path, readOnly, id is null ? null : CheckedText(id, "disk id"));
        }
        var networks = new NetworkConfig[r.ReadCount("network count", MaxDevices)];
        for (int i = 0; i < networks.Length; i++)
        {
            string tap = CheckedText(r.ReadString("TAP name", NetworkConfig.MaxTapNameBytes), "TAP name");
            byte[] mac = r.ReadBytes("MAC address", 6);
            if (mac.Length != 6) throw new StateFormatException("MAC address: not 6 bytes");
            networks[i] = new NetworkConfig(tap, mac);
        }
        if (disks.Length + networks.Length > VirtioMmioDevices.FreeIrqs.Length)
            throw new StateFormatException($"{disks.Length} disks and {networks.Length} networks: vmm places at most {VirtioMmioDevices.FreeIrqs.Length} virtio devices");
        return new MachineDescription(memoryBytes, vcpus, disks, networks) { VcpuCpuid = withCpuid ? ReadCpuid(r, vcpus) : null };
    }

    private static KvmCpuidEntry2[][]? ReadCpuid(StateReader r, int vcpus)
    {
        if (!r.ReadBool("CPUID present")) return null;
        var tables = new KvmCpuidEntry2[vcpus][];
        for (int i = 0; i < vcpus; i++)
        {
            tables[i] = r.ReadStructs<KvmCpuidEntry2>($"CPUID of vCPU {i}", KvmVcpu.MaxCpuidEntries);
            if (tables[i].Length == 0) throw new StateFormatException($"CPUID of vCPU {i}: no entries");
        }
        return tables;
    }

    /// <summary>A name or path that reaches the operating system: not empty, and free of the NUL and control
    /// characters no file or interface name has (a NUL would end it early, or make the call throw).</summary>
    private static string CheckedText(string text, string what)
    {
        if (text.Length == 0) throw new StateFormatException($"{what}: empty");
        foreach (char c in text)
            if (char.IsControl(c)) throw new StateFormatException($"{what}: contains the control character U+{(int)c:x4}");
        return text;
    }

    /// <summary>The same shape. The CPUID is not compared: a machine built for a description was given its CPUID,
    /// and what KVM reads back later has bits that follow the guest's own settings (OSXSAVE follows CR4).</summary>
    public bool SameAs(MachineDescription other) =>
        MemoryBytes == other.MemoryBytes && VcpuCount == other.VcpuCount
        && Disks.SequenceEqual(other.Disks)
        && Networks.Count == other.Networks.Count
        && Networks.Zip(other.Networks).All(p => p.First.TapName == p.Second.TapName && p.First.Mac.AsSpan().SequenceEqual(p.Second.Mac));
}
