using System.Buffers.Binary;
namespace Vmm.Devices;

/// <summary>QEMU's isa-debug-exit convention: a guest write of V to port 0x501 ends the VM, and vmm exits
/// with (V &lt;&lt; 1) | 1. Lets a test guest report its own result.</summary>
public sealed class DebugExitPort(IMachineStop machine) : IBusDevice
{
    public const ushort Port = 0x501;
    public const int PortCount = 2;

    public void Read(ulong offset, Span<byte> data) => data.Fill(0xff);

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        Span<byte> value = stackalloc byte[4];
        value.Clear();
        data[..Math.Min(data.Length, 4)].CopyTo(value);
        machine.RequestGuestExit(BinaryPrimitives.ReadUInt32LittleEndian(value));
    }
}
