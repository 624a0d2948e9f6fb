using System.Runtime.InteropServices;
using Vmm.Devices.Virtio;
using Vmm.Kvm.Interop;
using Vmm.State;

namespace Vmm.Fuzz;

/// <summary>Valid machine descriptions and states made from a random number generator: the well-formed
/// starting points for the state and migration-stream targets.</summary>
public static class StateSamples
{
    public static MachineDescription Description(Random random, ulong maxMemoryBytes)
    {
        ulong memory = (ulong)random.NextInt64(16 << 8, (long)(maxMemoryBytes >> 12) + 1) << 12;
        var disks = Enumerable.Range(0, random.Next(3))
            .Select(i => new BlockDiskConfig($"/srv/vm/disk{i}.img", random.Next(2) == 0, random.Next(2) == 0 ? null : $"id{i}")).ToArray();
        var networks = Enumerable.Range(0, random.Next(3))
            .Select(i => new NetworkConfig($"tap{i}", [0x02, 0, 0, 0, 0, (byte)i])).ToArray();
        int vcpus = random.Next(1, 5);
        var cpuid = random.Next(4) == 0 ? null : Enumerable.Range(0, vcpus)
            .Select(_ => Enumerable.Range(0, random.Next(1, 8)).Select(_ => Struct<KvmCpuidEntry2>(random)).ToArray()).ToArray();
        return new MachineDescription(memory, vcpus, disks, networks) { VcpuCpuid = cpuid };
    }

    public static MachineState State(Random random, MachineDescription description) => new()
    {
        Description = description,
        Vcpus = Enumerable.Range(0, description.VcpuCount).Select(_ => Vcpu(random)).ToArray(),
        Platform = Platform(random),
        Devices = [
            Section(random, "serial"), Section(random, "i8042"), Section(random, "cmos"),
            .. Enumerable.Range(0, description.Disks.Count + description.Networks.Count).Select(i => Section(random, Vm.VirtioMmioDevices.StateNameAt(i))),
        ],
    };

    private static VcpuState Vcpu(Random random)
    {
        var xcrs = Struct<KvmXcrs>(random);
        xcrs.Count %= 17;
        return new VcpuState
        {
            Regs = Struct<KvmRegs>(random), Sregs = Struct<KvmSregs>(random), Fpu = Struct<KvmFpu>(random),
            Xsave = random.Next(2) == 0 ? null : Mutations.RandomBytes(random, 4096 + random.Next(4) * 64),
            Xcrs = random.Next(2) == 0 ? null : xcrs,
            Msrs = Enumerable.Range(0, random.Next(8)).Select(_ => Struct<KvmMsrEntry>(random)).ToArray(),
            Lapic = Struct<KvmLapicState>(random), Events = Struct<KvmVcpuEvents>(random), MpState = Struct<KvmMpState>(random),
            DebugRegs = random.Next(2) == 0 ? null : Struct<KvmDebugRegs>(random),
            TscKhz = (uint)random.Next(),
        };
    }

    private static PlatformState Platform(Random random)
    {
        var master = Struct<KvmIrqchip>(random);
        var slave = Struct<KvmIrqchip>(random);
        var ioapic = Struct<KvmIrqchip>(random);
        (master.ChipId, slave.ChipId, ioapic.ChipId) = (0, 1, 2);
        return new PlatformState { PicMaster = master, PicSlave = slave, Ioapic = ioapic, Pit = Struct<KvmPitState2>(random), Clock = Struct<KvmClockData>(random) };
    }

    private static DeviceStateSection Section(Random random, string name) => new(name, Mutations.RandomBytes(random, random.Next(64)));

    private static T Struct<T>(Random random) where T : unmanaged =>
        MemoryMarshal.Read<T>(Mutations.RandomBytes(random, Marshal.SizeOf<T>()));
}
