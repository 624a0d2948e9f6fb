using Vmm.Serialization;

namespace Vmm.Devices.Virtio;

/// <summary>A virtio-mmio transport's registers, negotiated features and queues. The device type and
/// queue count are kept to refuse restoring it onto a different device.</summary>
public sealed record VirtioTransportState(
    uint DeviceType, uint DeviceFeaturesSel, uint DriverFeaturesSel, uint QueueSel, uint Status, uint InterruptStatus,
    ulong DriverFeatures, bool Active, bool Broken, IReadOnlyList<VirtqueueState> Queues)
{
    private const int MaxQueues = 64;

    public void Write(StateWriter w)
    {
        w.WriteUInt32(DeviceType);
        w.WriteUInt32(DeviceFeaturesSel);
        w.WriteUInt32(DriverFeaturesSel);
        w.WriteUInt32(QueueSel);
        w.WriteUInt32(Status);
        w.WriteUInt32(InterruptStatus);
        w.WriteUInt64(DriverFeatures);
        w.WriteBool(Active);
        w.WriteBool(Broken);
        w.WriteUInt32((uint)Queues.Count);
        foreach (var q in Queues) q.Write(w);
    }

    public static VirtioTransportState Read(StateReader r)
    {
        uint type = r.ReadUInt32("virtio device type");
        uint deviceSel = r.ReadUInt32("virtio device features select"), driverSel = r.ReadUInt32("virtio driver features select");
        uint queueSel = r.ReadUInt32("virtio queue select"), status = r.ReadUInt32("virtio status"), interrupt = r.ReadUInt32("virtio interrupt status");
        ulong features = r.ReadUInt64("virtio driver features");
        bool active = r.ReadBool("virtio active"), broken = r.ReadBool("virtio broken");
        int count = r.ReadCount("virtio queue count", MaxQueues);
        var queues = new VirtqueueState[count];
        for (int i = 0; i < count; i++) queues[i] = VirtqueueState.Read(r);
        return new VirtioTransportState(type, deviceSel, driverSel, queueSel, status, interrupt, features, active, broken, queues);
    }
}
