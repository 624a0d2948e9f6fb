namespace Vmm.Devices;

/// <summary>Places part of a device at another bus address: a device with non-contiguous ports (the
/// i8042 at 0x60 and 0x64) registers one window per port, each adding its offset within the device.</summary>
public sealed class BusDeviceWindow(IBusDevice device, ulong offsetInDevice) : IBusDevice
{
    public void Read(ulong offset, Span<byte> data) => device.Read(offsetInDevice + offset, data);
    public void Write(ulong offset, ReadOnlySpan<byte> data) => device.Write(offsetInDevice + offset, data);
}
