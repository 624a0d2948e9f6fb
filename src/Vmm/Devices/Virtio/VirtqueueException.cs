namespace Vmm.Devices.Virtio;

/// <summary>The guest's driver broke a rule of the split virtqueue (virtio 1.2 §2.7): the message names
/// the rule. The device stops using the queue (and may set DEVICE_NEEDS_RESET); the VMM carries on.</summary>
public sealed class VirtqueueException(string message) : VmmException(message);
