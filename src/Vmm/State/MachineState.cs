using System.Text;
using Vmm.Devices;
using Vmm.Devices.Virtio;
using Vmm.Serialization;
using Vmm.Vm;

namespace Vmm.State;

/// <summary>The whole state of a paused VM except its RAM: what it is made of, every vCPU, the in-kernel
/// interrupt controllers and timers, and every device's state under its name. Its binary form starts with a
/// magic and a format version; a reader refuses a version it does not know rather than guess.
/// <para>Version 3 adds the CPUID each vCPU showed its guest to the <see cref="MachineDescription"/>. Version 2
/// (without it: a restore computes the CPUID from the host, as it did then) stores each device as a named,
/// length-prefixed section, so the format does not change when devices are added. Version 1 (vmm 0.1's fixed
/// list: serial, i8042, CMOS, virtio transports) is still read.</para></summary>
public sealed class MachineState
{
    public static ReadOnlySpan<byte> Magic => "VMMSTATE"u8;
    public const uint FormatVersion = 3;
    private const uint FixedDeviceListVersion = 1, WithoutCpuidVersion = 2;
    private const int MaxDevices = 256;
    private const int MaxDeviceNameBytes = 256;
    private const int MaxDeviceStateBytes = 1 << 20;

    public required MachineDescription Description { get; init; }
    public required IReadOnlyList<VcpuState> Vcpus { get; init; }
    public required PlatformState Platform { get; init; }
    public required IReadOnlyList<DeviceStateSection> Devices { get; init; }

    /// <summary>The same state for a machine described otherwise (a storage migration's disks at new paths).</summary>
    public MachineState WithDescription(MachineDescription description) =>
        new() { Description = description, Vcpus = Vcpus, Platform = Platform, Devices = Devices };

    public byte[] ToBytes()
    {
        var w = new StateWriter();
        foreach (byte b in Magic) w.WriteUInt8(b);
        w.WriteUInt32(FormatVersion);
        Description.Write(w);
        foreach (var vcpu in Vcpus) vcpu.Write(w);
        Platform.Write(w);
        w.WriteUInt32((uint)Devices.Count);
        foreach (var device in Devices)
        {
            w.WriteString(device.Name);
            w.WriteBytes(device.State);
        }
        return w.ToArray();
    }

    public static MachineState FromBytes(ReadOnlyMemory<byte> bytes)
    {
        var r = new StateReader(bytes);
        Span<byte> magic = stackalloc byte[Magic.Length];
        for (int i = 0; i < magic.Length; i++) magic[i] = r.ReadUInt8("magic");
        if (!magic.SequenceEqual(Magic))
            throw new StateFormatException($"not a vmm state (magic \"{Encoding.ASCII.GetString(magic)}\")");
        uint version = r.ReadUInt32("format version");
        if (version is not (FixedDeviceListVersion or WithoutCpuidVersion or FormatVersion))
            throw new StateFormatException($"state format version {version}; this vmm reads versions {FixedDeviceListVersion} to {FormatVersion}");
        var description = MachineDescription.Read(r, withCpuid: version >= FormatVersion);
        var vcpus = new VcpuState[description.VcpuCount];
        for (int i = 0; i < vcpus.Length; i++) vcpus[i] = VcpuState.Read(r);
        var platform = PlatformState.Read(r);
        var devices = version == FixedDeviceListVersion ? ReadFixedDeviceList(r, description) : ReadSections(r);
        r.ExpectEnd("VM state");
        return new MachineState { Description = description, Vcpus = vcpus, Platform = platform, Devices = devices };
    }

    private static DeviceStateSection[] ReadSections(StateReader r)
    {
        var sections = new DeviceStateSection[r.ReadCount("device count", MaxDevices)];
        var names = new HashSet<string>();
        for (int i = 0; i < sections.Length; i++)
        {
            string name = r.ReadString("device name", MaxDeviceNameBytes);
            if (!names.Add(name)) throw new StateFormatException($"device \"{name}\" saved twice");
            sections[i] = new DeviceStateSection(name, r.ReadBytes($"state of device \"{name}\"", MaxDeviceStateBytes));
        }
        return sections;
    }

    /// <summary>Version 1: the serial port, the i8042, the CMOS and one virtio-mmio transport per disk and
    /// network, in that order, each in the encoding its device still reads; turned into named sections.</summary>
    private static DeviceStateSection[] ReadFixedDeviceList(StateReader r, MachineDescription description)
    {
        var sections = new List<DeviceStateSection>
        {
            Section("serial", Serial8250State.Read(r).Write),
            Section("i8042", I8042State.Read(r).Write),
            Section("cmos", CmosRtcState.Read(r).Write),
        };
        int expected = description.Disks.Count + description.Networks.Count;
        int count = r.ReadCount("virtio device count", expected);
        if (count != expected)
            throw new StateFormatException($"{count} virtio devices saved for {description.Disks.Count} disks and {description.Networks.Count} networks");
        for (int i = 0; i < count; i++)
            sections.Add(Section(VirtioMmioDevices.StateNameAt(i), VirtioTransportState.Read(r).Write));
        return sections.ToArray();
    }

    private static DeviceStateSection Section(string name, Action<StateWriter> write)
    {
        var w = new StateWriter();
        write(w);
        return new DeviceStateSection(name, w.ToArray());
    }
}
