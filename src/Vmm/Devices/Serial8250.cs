using Vmm.Serialization;

namespace Vmm.Devices;

/// <summary>A 16550A-compatible UART (the PC's COM1 at 0x3f8, IRQ 4), enough for Linux's 8250 driver in
/// interrupt mode: divisor latch, IER/IIR with the THRE and RX interrupts, FIFO control, loopback (which
/// the driver's probe uses), LSR/MSR. Transmission is instant; received bytes wait in a bounded FIFO and
/// a writer blocks while it is full, so no input is dropped.</summary>
public sealed class Serial8250 : IBusDevice, IStatefulDevice
{
    public const ushort Com1Port = 0x3f8;
    public const uint Com1Irq = 4;
    public const int RegisterCount = 8;
    public const int ReceiveFifoBytes = 64;

    // Register offsets (include/uapi/linux/serial_reg.h).
    private const int Data = 0, InterruptEnable = 1, InterruptId = 2, LineControl = 3;
    private const int ModemControl = 4, LineStatus = 5, ModemStatus = 6, Scratch = 7;

    private const byte IerReceivedData = 0x01, IerTransmitterEmpty = 0x02, IerLineStatus = 0x04;
    private const byte IirNoInterrupt = 0x01, IirTransmitterEmpty = 0x02, IirReceivedData = 0x04, IirLineStatus = 0x06;
    private const byte IirFifosEnabled = 0xc0;
    private const byte FcrEnable = 0x01, FcrClearReceive = 0x02;
    private const byte LcrDivisorLatch = 0x80;
    private const byte McrDtr = 0x01, McrRts = 0x02, McrOut1 = 0x04, McrOut2 = 0x08, McrLoop = 0x10;
    private const byte LsrDataReady = 0x01, LsrOverrun = 0x02, LsrThrEmpty = 0x20, LsrTransmitterEmpty = 0x40;
    private const byte MsrCts = 0x10, MsrDsr = 0x20, MsrRi = 0x40, MsrDcd = 0x80;

    private readonly object _lock = new();
    private readonly Stream _output;
    private readonly IInterruptLine _interrupt;
    private readonly Queue<byte> _receive = new();

    private byte _ier, _lcr, _mcr = McrOut2, _scratch, _fcr;
    private byte _divisorLow = 0x0c, _divisorHigh; // 9600 baud, what firmware leaves
    private bool _thrEmptyPending, _overrun, _lineHigh;
    private bool _outputBroken;
    private int _writersWaiting;

    public Serial8250(Stream output, IInterruptLine interrupt)
    {
        _output = output;
        _interrupt = interrupt;
    }

    /// <summary>Raised once, when the console sink fails (e.g. a closed pipe); output is dropped after that.</summary>
    public event Action<Exception>? OutputFailed;

    public void Read(ulong offset, Span<byte> data)
    {
        if (data.Length == 0) return;
        bool trigger;
        lock (_lock)
        {
            data[0] = ReadRegister((int)offset);
            data[1..].Clear();
            trigger = UpdateInterruptLine();
        }
        if (trigger) _interrupt.Trigger();
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.Length == 0) return;
        bool trigger;
        lock (_lock)
        {
            // Transmitting under the lock keeps bytes in order when several vCPUs write.
            if (WriteRegister((int)offset, data[0]) is { } transmitted) Transmit(transmitted);
            trigger = UpdateInterruptLine();
        }
        if (trigger) _interrupt.Trigger();
    }

    /// <summary>Bytes typed by the user: queued for the guest, blocking while the FIFO is full.
    /// Returns false if <paramref name="cancellation"/> fired first.</summary>
    /// <summary>How many <see cref="Receive"/> calls are waiting for room in the FIFO right now.</summary>
    internal int WritersWaiting
    {
        get { lock (_lock) return _writersWaiting; }
    }

    public bool Receive(ReadOnlySpan<byte> bytes, CancellationToken cancellation = default)
    {
        foreach (byte b in bytes)
        {
            bool trigger;
            lock (_lock)
            {
                while (_receive.Count >= ReceiveFifoBytes)
                {
                    if (cancellation.IsCancellationRequested) return false;
                    _writersWaiting++;
                    Monitor.Wait(_lock, 50);
                    _writersWaiting--;
                }
                _receive.Enqueue(b);
                trigger = UpdateInterruptLine();
            }
            if (trigger) _interrupt.Trigger();
        }
        return true;
    }

    public string StateName => "serial";

    public void SaveState(StateWriter writer) => SaveState().Write(writer);

    public void RestoreState(StateReader reader) => RestoreState(Serial8250State.Read(reader));

    public Serial8250State SaveState()
    {
        lock (_lock)
            return new Serial8250State(_ier, _lcr, _mcr, _scratch, _fcr, _divisorLow, _divisorHigh,
                _thrEmptyPending, _overrun, _lineHigh, _receive.ToArray());
    }

    public void RestoreState(Serial8250State state)
    {
        lock (_lock)
        {
            (_ier, _lcr, _mcr, _scratch, _fcr) = (state.Ier, state.Lcr, state.Mcr, state.Scratch, state.Fcr);
            (_divisorLow, _divisorHigh) = (state.DivisorLow, state.DivisorHigh);
            (_thrEmptyPending, _overrun, _lineHigh) = (state.ThrEmptyPending, state.Overrun, state.LineHigh);
            _receive.Clear();
            foreach (byte b in state.Received) _receive.Enqueue(b);
            Monitor.PulseAll(_lock);
        }
    }

    private byte ReadRegister(int register)
    {
        bool dlab = (_lcr & LcrDivisorLatch) != 0;
        switch (register)
        {
            case Data when dlab: return _divisorLow;
            case Data:
                if (_receive.Count == 0) return 0;
                byte b = _receive.Dequeue();
                Monitor.PulseAll(_lock);
                return b;
            case InterruptEnable when dlab: return _divisorHigh;
            case InterruptEnable: return _ier;
            case InterruptId:
                byte iir = PendingInterrupt();
                // Reading IIR acknowledges a THRE interrupt (16550 data sheet, "Interrupt Identification").
                if (iir == IirTransmitterEmpty) _thrEmptyPending = false;
                return (byte)(iir | ((_fcr & FcrEnable) != 0 ? IirFifosEnabled : 0));
            case LineControl: return _lcr;
            case ModemControl: return _mcr;
            case LineStatus:
                byte lsr = (byte)(LsrThrEmpty | LsrTransmitterEmpty | (_receive.Count > 0 ? LsrDataReady : 0) | (_overrun ? LsrOverrun : 0));
                _overrun = false;
                return lsr;
            case ModemStatus: return ModemStatusValue();
            case Scratch: return _scratch;
            default: return 0xff;
        }
    }

    private byte? WriteRegister(int register, byte value)
    {
        bool dlab = (_lcr & LcrDivisorLatch) != 0;
        switch (register)
        {
            case Data when dlab: _divisorLow = value; break;
            case Data:
                // The holding register empties at once, so the THRE interrupt is due again.
                _thrEmptyPending = true;
                if ((_mcr & McrLoop) == 0) return value;
                if (_receive.Count < ReceiveFifoBytes) _receive.Enqueue(value); else _overrun = true;
                break;
            case InterruptEnable when dlab: _divisorHigh = value; break;
            case InterruptEnable:
                // Enabling THRE while the transmitter is empty interrupts at once, as on real parts;
                // Linux's driver relies on it to start transmitting.
                if ((value & IerTransmitterEmpty) != 0) _thrEmptyPending = true;
                _ier = (byte)(value & 0x0f);
                break;
            case InterruptId:
                _fcr = (byte)(value & 0xc9);
                if ((value & FcrClearReceive) != 0) _receive.Clear();
                Monitor.PulseAll(_lock);
                break;
            case LineControl: _lcr = value; break;
            case ModemControl: _mcr = (byte)(value & 0x1f); break;
            case Scratch: _scratch = value; break;
        }
        return null;
    }

    private byte ModemStatusValue()
    {
        if ((_mcr & McrLoop) == 0) return MsrDcd | MsrDsr | MsrCts;
        // Loopback wires the modem outputs back to the inputs: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
        byte msr = 0;
        if ((_mcr & McrRts) != 0) msr |= MsrCts;
        if ((_mcr & McrDtr) != 0) msr |= MsrDsr;
        if ((_mcr & McrOut1) != 0) msr |= MsrRi;
        if ((_mcr & McrOut2) != 0) msr |= MsrDcd;
        return msr;
    }

    private byte PendingInterrupt()
    {
        if ((_ier & IerLineStatus) != 0 && _overrun) return IirLineStatus;
        if ((_ier & IerReceivedData) != 0 && _receive.Count > 0) return IirReceivedData;
        if ((_ier & IerTransmitterEmpty) != 0 && _thrEmptyPending) return IirTransmitterEmpty;
        return IirNoInterrupt;
    }

    /// <summary>Recomputes the IRQ output (gated by OUT2, as on a PC; off in loopback) and says whether it
    /// just rose: the ISA line is edge-triggered at the interrupt controller.</summary>
    private bool UpdateInterruptLine()
    {
        bool high = PendingInterrupt() != IirNoInterrupt && (_mcr & McrOut2) != 0 && (_mcr & McrLoop) == 0;
        bool rose = high && !_lineHigh;
        _lineHigh = high;
        return rose;
    }

    private void Transmit(byte value)
    {
        if (_outputBroken) return;
        try
        {
            _output.WriteByte(value);
            _output.Flush();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _outputBroken = true;
            OutputFailed?.Invoke(e);
        }
    }
}
