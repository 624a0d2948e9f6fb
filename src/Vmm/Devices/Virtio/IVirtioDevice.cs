namespace Vmm.Devices.Virtio;

/// <summary>A virtio device model, independent of the transport that carries it (virtio 1.2, section 2).</summary>
public interface IVirtioDevice
{
    VirtioDeviceType Type { get; }
    /// <summary>Every feature bit the device offers, the transport-level ones (VERSION_1, ...) included.</summary>
    ulong OfferedFeatures { get; }
    /// <summary>The largest size of each queue the device uses.</summary>
    IReadOnlyList<ushort> QueueMaxSizes { get; }
    void ReadConfig(int offset, Span<byte> data);
    void WriteConfig(int offset, ReadOnlySpan<byte> data);
    /// <summary>The driver set DRIVER_OK: the queues are validated and the device may use them.</summary>
    void Activate(VirtioActivation activation);
    /// <summary>The driver kicked queue <paramref name="index"/>. Runs on the device thread. A
    /// <see cref="VirtqueueException"/> means the guest broke the queue rules.</summary>
    void ProcessQueue(int index);
    /// <summary>The driver reset the device: stop using the queues, drop in-flight state.</summary>
    void Reset();
    /// <summary>Makes what the device wrote outside guest memory durable (see <see cref="IStatefulDevice.FlushToStorage"/>).</summary>
    void FlushToStorage() { }
}
