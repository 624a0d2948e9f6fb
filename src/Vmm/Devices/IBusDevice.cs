namespace Vmm.Devices;

/// <summary>A device on the port-I/O or MMIO bus. Offsets are relative to the device's base address;
/// <c>data</c> is the access (1, 2, 4 or 8 bytes), little-endian.</summary>
public interface IBusDevice
{
    void Read(ulong offset, Span<byte> data);
    void Write(ulong offset, ReadOnlySpan<byte> data);
}
