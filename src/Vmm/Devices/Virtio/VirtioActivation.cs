using Vmm.Memory;

namespace Vmm.Devices.Virtio;

/// <summary>What a device gets when the driver starts it: the negotiated features, its queues (null where
/// the driver left a queue disabled), guest memory, and the way to interrupt the driver.</summary>
public sealed record VirtioActivation(
    ulong AcknowledgedFeatures,
    IReadOnlyList<Virtqueue?> Queues,
    GuestMemory Memory,
    Action SignalUsedBuffers);
