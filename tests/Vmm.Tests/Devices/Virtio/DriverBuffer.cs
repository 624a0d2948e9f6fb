namespace Vmm.Tests.Devices.Virtio;

/// <summary>One buffer as a test driver posts it.</summary>
internal readonly record struct DriverBuffer(ulong Address, uint Length, bool DeviceWritable);
