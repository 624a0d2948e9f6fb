namespace Vmm.State;

/// <summary>One device's saved state: the device's <see cref="Devices.IStatefulDevice.StateName"/> and what it
/// wrote (read back only by the device of that name).</summary>
public sealed record DeviceStateSection(string Name, byte[] State);
