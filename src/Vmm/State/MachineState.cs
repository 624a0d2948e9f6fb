using System.Text;
using Vmm.Devices;
using Vmm.Devices.Virtio;

namespace Vmm.State;

/// <summary>The whole state of a paused VM except its RAM: what it is made of, every vCPU, the in-kernel
/// interrupt controllers and timers, and every device. Its binary form starts with a magic and a format
/// version; a reader refuses any other version rather than guess.</summary>
public sealed class MachineState
{
    public static ReadOnlySpan<byte> Magic => "VMMSTATE"u8;
    public const uint FormatVersion = 1;

    public required MachineDescription Description { get; init; }
    public required IReadOnlyList<VcpuState> Vcpus { get; init; }
    public required PlatformState Platform { get; init; }
    public required Serial8250State Serial { get; init; }
    public required I8042State I8042 { get; init; }
    public required CmosRtcState Cmos { get; init; }
    public required IReadOnlyList<VirtioTransportState> Virtio { get; init; }

    public byte[] ToBytes()
    {
        var w = new StateWriter();
        foreach (byte b in Magic) w.WriteUInt8(b);
        w.WriteUInt32(FormatVersion);
        Description.Write(w);
        foreach (var vcpu in Vcpus) vcpu.Write(w);
        Platform.Write(w);
        Serial.Write(w);
        I8042.Write(w);
        Cmos.Write(w);
        w.WriteUInt32((uint)Virtio.Count);
        foreach (var device in Virtio) device.Write(w);
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
        if (version != FormatVersion)
            throw new StateFormatException($"state format version {version}; this vmm reads version {FormatVersion}");
        var description = MachineDescription.Read(r);
        var vcpus = new VcpuState[description.VcpuCount];
        for (int i = 0; i < vcpus.Length; i++) vcpus[i] = VcpuState.Read(r);
        var platform = PlatformState.Read(r);
        var serial = Serial8250State.Read(r);
        var i8042 = I8042State.Read(r);
        var cmos = CmosRtcState.Read(r);
        int virtioCount = r.ReadCount("virtio device count", description.Disks.Count + description.Networks.Count);
        if (virtioCount != description.Disks.Count + description.Networks.Count)
            throw new StateFormatException($"{virtioCount} virtio devices saved for {description.Disks.Count} disks and {description.Networks.Count} networks");
        var virtio = new VirtioTransportState[virtioCount];
        for (int i = 0; i < virtio.Length; i++) virtio[i] = VirtioTransportState.Read(r);
        r.ExpectEnd("VM state");
        return new MachineState
        {
            Description = description, Vcpus = vcpus, Platform = platform, Serial = serial, I8042 = i8042, Cmos = cmos, Virtio = virtio,
        };
    }
}
