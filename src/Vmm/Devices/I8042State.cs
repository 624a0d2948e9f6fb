using Vmm.Serialization;

namespace Vmm.Devices;

/// <summary>An <see cref="I8042Controller"/>'s registers, half-finished commands and unread output bytes.</summary>
public sealed record I8042State(byte Config, byte Status, byte PendingControllerCommand, byte PendingKeyboardCommand, byte OutputPort, byte[] Output)
{
    public const int MaxOutputBytes = 256;

    public void Write(StateWriter w)
    {
        foreach (byte b in (byte[])[Config, Status, PendingControllerCommand, PendingKeyboardCommand, OutputPort]) w.WriteUInt8(b);
        w.WriteBytes(Output);
    }

    public static I8042State Read(StateReader r) => new(
        r.ReadUInt8("i8042 config"), r.ReadUInt8("i8042 status"), r.ReadUInt8("i8042 controller command"),
        r.ReadUInt8("i8042 keyboard command"), r.ReadUInt8("i8042 output port"), r.ReadBytes("i8042 output", MaxOutputBytes));
}
