using System.Runtime.InteropServices;
using System.Text;
using CsCheck;
using Vmm.Devices.Virtio;
using Vmm.Kvm.Interop;
using Vmm.Serialization;
using Vmm.State;
using Xunit;

namespace Vmm.Tests.State;

/// <summary>Properties of the state format over generated values: whatever vmm writes, it reads back to the
/// same bytes; and a description that reaches the host's file system or network stack is refused when it
/// holds what no path or interface name may.</summary>
public sealed class StateRoundTripPropertyTests
{
    private static readonly Gen<string> Name =
        Gen.Char["abcdefghijklmnopqrstuvwxyz0123456789-_./ é"].Array[1, 40].Select(chars => new string(chars));

    private static readonly Gen<BlockDiskConfig> Disk =
        Gen.Select(Name, Gen.Bool, Gen.Char["abcdef0123"].Array[1, 20].Select(c => new string(c)).Null(0.5))
            .Select((path, readOnly, id) => new BlockDiskConfig("/" + path, readOnly, id));

    private static readonly Gen<NetworkConfig> Network =
        Gen.Select(Gen.Char["abcdefghij0123456789"].Array[1, 15], Gen.Byte.Array[6])
            .Select((tap, mac) => new NetworkConfig(new string(tap), mac));

    private static Gen<T> Struct<T>() where T : unmanaged =>
        Gen.Byte.Array[Marshal.SizeOf<T>()].Select(bytes => MemoryMarshal.Read<T>(bytes));

    /// <summary>Each vCPU's CPUID (any entries, up to KVM's 256), or none as in a state from before it was saved.</summary>
    private static Gen<KvmCpuidEntry2[][]?> Cpuid(int vcpus) =>
        Gen.Frequency((3, Gen.Select(Struct<KvmCpuidEntry2>().Array[1, 12], Gen.Int[0, 20]).Select((entries, extra) =>
                    // Now and then a table of the most entries KVM takes.
                    extra == 0 ? [.. entries, .. Enumerable.Repeat(entries[0], Vmm.Kvm.KvmVcpu.MaxCpuidEntries - entries.Length)] : entries)
                .Array[vcpus].Select(tables => (KvmCpuidEntry2[][]?)tables)),
            (1, Gen.Const((KvmCpuidEntry2[][]?)null)));

    public static readonly Gen<MachineDescription> Description =
        Gen.Select(Gen.ULong[4096, 1 << 16], Gen.Int[1, 32], Disk.Array[0, 4], Network.Array[0, 4])
            .SelectMany((pages, vcpus, disks, networks) => Cpuid(vcpus)
                .Select(cpuid => new MachineDescription(pages * 4096, vcpus, disks, networks) { VcpuCpuid = cpuid }));

    private static readonly Gen<VcpuState> Vcpu =
        Gen.Select(Struct<KvmRegs>(), Struct<KvmSregs>(), Struct<KvmFpu>(), Gen.Byte.Array[4096, 8192].Null(0.3),
                Struct<KvmXcrs>().Select(x => { x.Count %= 17; return x; }).Nullable(0.3), Struct<KvmMsrEntry>().Array[0, 64])
            .SelectMany(first => Gen.Select(Struct<KvmLapicState>(), Struct<KvmVcpuEvents>(), Struct<KvmMpState>(),
                    Struct<KvmDebugRegs>().Nullable(0.3), Gen.UInt)
                .Select((lapic, events, mp, debug, tsc) => new VcpuState
                {
                    Regs = first.Item1, Sregs = first.Item2, Fpu = first.Item3, Xsave = first.Item4, Xcrs = first.Item5, Msrs = first.Item6,
                    Lapic = lapic, Events = events, MpState = mp, DebugRegs = debug, TscKhz = tsc,
                }));

    private static readonly Gen<PlatformState> Platform =
        Gen.Select(Struct<KvmIrqchip>(), Struct<KvmIrqchip>(), Struct<KvmIrqchip>(), Struct<KvmPitState2>(), Struct<KvmClockData>())
            .Select((master, slave, ioapic, pit, clock) =>
            {
                (master.ChipId, slave.ChipId, ioapic.ChipId) = (0, 1, 2);
                return new PlatformState { PicMaster = master, PicSlave = slave, Ioapic = ioapic, Pit = pit, Clock = clock };
            });

    private static readonly Gen<DeviceStateSection[]> Sections =
        Gen.Select(Name, Gen.Byte.Array[0, 600]).Select((name, state) => new DeviceStateSection(name, state)).Array[0, 8]
            .Select(sections => sections.DistinctBy(s => s.Name).ToArray());

    private static readonly Gen<MachineState> State =
        Description.SelectMany(description => Gen.Select(Vcpu.Array[description.VcpuCount], Platform, Sections)
            .Select((vcpus, platform, sections) => new MachineState { Description = description, Vcpus = vcpus, Platform = platform, Devices = sections }));

    [Fact]
    public void MachineDescription_ReadsBackWhatWasWritten()
    {
        Description.Sample(description =>
        {
            var w = new StateWriter();
            description.Write(w);
            var read = MachineDescription.Read(new StateReader(w.ToArray()));
            Assert.True(read.SameAs(description));
            Assert.Equal(description.Disks, read.Disks);
            Assert.Equal(description.VcpuCpuid, read.VcpuCpuid);
        }, iter: 500);
    }

    [Fact]
    public void MachineDescription_WithMoreCpuidEntriesThanKvmTakes_IsRefused()
    {
        var w = new StateWriter();
        var table = new KvmCpuidEntry2[Vmm.Kvm.KvmVcpu.MaxCpuidEntries + 1];
        (new MachineDescription(64UL << 20, 1, [], []) { VcpuCpuid = [table] }).Write(w);
        Assert.Contains("CPUID of vCPU 0 count", Assert.Throws<StateFormatException>(() => MachineDescription.Read(new StateReader(w.ToArray()))).Message);
    }

    [Fact]
    public void MachineDescription_WithAnEmptyCpuid_IsRefused()
    {
        var w = new StateWriter();
        (new MachineDescription(64UL << 20, 2, [], []) { VcpuCpuid = [[new KvmCpuidEntry2()], []] }).Write(w);
        Assert.Contains("CPUID of vCPU 1: no entries", Assert.Throws<StateFormatException>(() => MachineDescription.Read(new StateReader(w.ToArray()))).Message);
    }

    [Fact]
    public void MachineState_ReadsBackToTheSameBytes()
    {
        State.Sample(state =>
        {
            byte[] bytes = state.ToBytes();
            Assert.Equal(bytes, MachineState.FromBytes(bytes).ToBytes());
        }, iter: 200);
    }

    [Theory]
    [InlineData("/srv/vm/disk\0.img")]
    [InlineData("/srv/vm/\ndisk.img")]
    [InlineData("")]
    public void MachineDescription_WithADiskPathNoFileCanHave_IsRefused(string path)
    {
        var w = new StateWriter();
        new MachineDescription(64UL << 20, 1, [new BlockDiskConfig(path, false, null)], []).Write(w);
        var failure = Assert.Throws<StateFormatException>(() => MachineDescription.Read(new StateReader(w.ToArray())));
        Assert.Contains("disk path", failure.Message);
    }

    [Fact]
    public void MachineDescription_WithATapNameHoldingANul_IsRefused()
    {
        var w = new StateWriter();
        new MachineDescription(64UL << 20, 1, [], [new NetworkConfig("tap\00", new byte[6])]).Write(w);
        Assert.Contains("TAP name", Assert.Throws<StateFormatException>(() => MachineDescription.Read(new StateReader(w.ToArray()))).Message);
    }

    [Fact]
    public void MachineDescription_WithMoreDevicesThanVmmPlaces_IsRefused()
    {
        var w = new StateWriter();
        var disks = Enumerable.Range(0, VirtioMmioDevicesCount + 1).Select(i => new BlockDiskConfig($"/d{i}", false, null)).ToArray();
        new MachineDescription(64UL << 20, 1, disks, []).Write(w);
        Assert.Contains("at most", Assert.Throws<StateFormatException>(() => MachineDescription.Read(new StateReader(w.ToArray()))).Message);
    }

    private static int VirtioMmioDevicesCount => Vmm.Vm.VirtioMmioDevices.FreeIrqs.Length;

    [Fact]
    public void Version1State_IsReadIntoNamedDeviceSections()
    {
        // vmm 0.1 wrote the devices as a fixed list with nothing between them: serial, i8042, CMOS, then a
        // count and one virtio transport per disk and network. Each device's encoding is unchanged.
        var serial = new Vmm.Devices.Serial8250State(1, 2, 3, 4, 5, 6, 7, true, false, true, [9, 9]);
        var i8042 = new Vmm.Devices.I8042State(1, 2, 3, 4, 5, [6]);
        var cmos = new Vmm.Devices.CmosRtcState(14, new byte[Vmm.Devices.CmosRtc.RamBytes]);
        var transport = new VirtioTransportState(2, 0, 1, 0, 15, 0, 1UL << 32, true, false, [new VirtqueueState(16, true, 0x1000, 0x2000, 0x3000, 5, 5)]);
        State.Sample(state =>
        {
            int virtioCount = state.Description.Disks.Count + state.Description.Networks.Count;
            var w = new StateWriter();
            foreach (byte b in "VMMSTATE"u8) w.WriteUInt8(b);
            w.WriteUInt32(1);
            DescriptionWithoutCpuid.Write(w, state.Description);
            foreach (var vcpu in state.Vcpus) vcpu.Write(w);
            state.Platform.Write(w);
            serial.Write(w);
            i8042.Write(w);
            cmos.Write(w);
            w.WriteUInt32((uint)virtioCount);
            for (int i = 0; i < virtioCount; i++) transport.Write(w);

            var read = MachineState.FromBytes(w.ToArray());

            Assert.Equal(["serial", "i8042", "cmos", .. Enumerable.Range(0, virtioCount).Select(i => $"virtio-mmio 0x{0xd000_0000 + i * 0x1000:x}")],
                read.Devices.Select(d => d.Name));
            Assert.Equal(Encode(serial.Write), read.Devices[0].State);
            Assert.Equal(Encode(cmos.Write), read.Devices[2].State);
            if (virtioCount > 0) Assert.Equal(Encode(transport.Write), read.Devices[^1].State);
        }, iter: 50);
    }

    [Fact]
    public void Version2State_IsReadWithoutCpuid()
    {
        // vmm wrote version 2 until the CPUID travelled with the VM: the description ended after the networks.
        State.Sample(state =>
        {
            var w = new StateWriter();
            foreach (byte b in "VMMSTATE"u8) w.WriteUInt8(b);
            w.WriteUInt32(2);
            DescriptionWithoutCpuid.Write(w, state.Description);
            foreach (var vcpu in state.Vcpus) vcpu.Write(w);
            state.Platform.Write(w);
            w.WriteUInt32((uint)state.Devices.Count);
            foreach (var device in state.Devices)
            {
                w.WriteString(device.Name);
                w.WriteBytes(device.State);
            }

            var read = MachineState.FromBytes(w.ToArray());

            Assert.Null(read.Description.VcpuCpuid);
            Assert.True(read.Description.SameAs(state.Description));
            Assert.Equal(state.Devices.Select(d => (d.Name, Convert.ToHexString(d.State))), read.Devices.Select(d => (d.Name, Convert.ToHexString(d.State))));
            var withoutCpuid = new MachineState { Description = state.Description with { VcpuCpuid = null }, Vcpus = state.Vcpus, Platform = state.Platform, Devices = state.Devices };
            Assert.Equal(withoutCpuid.ToBytes(), read.ToBytes());
        }, iter: 50);
    }

    private static byte[] Encode(Action<StateWriter> write)
    {
        var w = new StateWriter();
        write(w);
        return w.ToArray();
    }
}
