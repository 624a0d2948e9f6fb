namespace Vmm.Devices.Virtio;

/// <summary>One buffer of a descriptor chain: a guest physical range already checked to lie inside
/// one region of guest RAM.</summary>
public readonly record struct DescriptorSegment(ulong Address, uint Length);
