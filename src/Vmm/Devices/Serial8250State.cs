using Vmm.Serialization;

namespace Vmm.Devices;

/// <summary>A <see cref="Serial8250"/>'s registers and the bytes waiting in its receive FIFO.</summary>
public sealed record Serial8250State(
    byte Ier, byte Lcr, byte Mcr, byte Scratch, byte Fcr, byte DivisorLow, byte DivisorHigh,
    bool ThrEmptyPending, bool Overrun, bool LineHigh, byte[] Received)
{
    public void Write(StateWriter w)
    {
        foreach (byte b in (byte[])[Ier, Lcr, Mcr, Scratch, Fcr, DivisorLow, DivisorHigh]) w.WriteUInt8(b);
        w.WriteBool(ThrEmptyPending);
        w.WriteBool(Overrun);
        w.WriteBool(LineHigh);
        w.WriteBytes(Received);
    }

    public static Serial8250State Read(StateReader r) => new(
        r.ReadUInt8("serial IER"), r.ReadUInt8("serial LCR"), r.ReadUInt8("serial MCR"), r.ReadUInt8("serial scratch"),
        r.ReadUInt8("serial FCR"), r.ReadUInt8("serial divisor"), r.ReadUInt8("serial divisor"),
        r.ReadBool("serial THRE pending"), r.ReadBool("serial overrun"), r.ReadBool("serial IRQ line"),
        r.ReadBytes("serial receive FIFO", Serial8250.ReceiveFifoBytes));
}
