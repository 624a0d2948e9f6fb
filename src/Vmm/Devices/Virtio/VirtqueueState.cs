using Vmm.Serialization;

namespace Vmm.Devices.Virtio;

/// <summary>A virtqueue's configuration and the device's positions in its rings: with guest memory, all a
/// device needs to go on where it stopped.</summary>
public sealed record VirtqueueState(
    ushort Size, bool Ready, ulong DescriptorTableAddress, ulong AvailableRingAddress, ulong UsedRingAddress,
    ushort NextAvailableIndex, ushort NextUsedIndex)
{
    public void Write(StateWriter w)
    {
        w.WriteUInt16(Size);
        w.WriteBool(Ready);
        w.WriteUInt64(DescriptorTableAddress);
        w.WriteUInt64(AvailableRingAddress);
        w.WriteUInt64(UsedRingAddress);
        w.WriteUInt16(NextAvailableIndex);
        w.WriteUInt16(NextUsedIndex);
    }

    public static VirtqueueState Read(StateReader r) => new(
        r.ReadUInt16("queue size"), r.ReadBool("queue ready"), r.ReadUInt64("descriptor table address"),
        r.ReadUInt64("available ring address"), r.ReadUInt64("used ring address"),
        r.ReadUInt16("next available index"), r.ReadUInt16("next used index"));
}
