using System.Text;
using Vmm.Devices;
using Xunit;

namespace Vmm.Tests.Devices;

public sealed class Serial8250Tests
{
    // Register offsets (include/uapi/linux/serial_reg.h).
    private const ulong Rbr = 0, Thr = 0, Dll = 0, Ier = 1, Dlm = 1, Iir = 2, Fcr = 2, Lcr = 3, Mcr = 4, Lsr = 5, Msr = 6, Scr = 7;

    private readonly MemoryStream _output = new();
    private readonly CountingInterruptLine _irq = new();
    private readonly Serial8250 _uart;

    public Serial8250Tests() => _uart = new Serial8250(_output, _irq);

    private byte In(ulong register) => _uart.ReadByte(register);
    private void Out(ulong register, byte value) => _uart.WriteByte(register, value);

    /// <summary>What serial8250_startup and set_termios leave: 8n1, FIFO on, DTR|RTS|OUT2.</summary>
    private void LinuxStartup()
    {
        Out(Lcr, 0x83);  // DLAB, 8n1
        Out(Dll, 0x01);  // 115200
        Out(Dlm, 0x00);
        Out(Lcr, 0x03);
        Out(Fcr, 0x07);  // enable, clear both FIFOs
        Out(Mcr, 0x0b);  // DTR | RTS | OUT2
    }

    [Fact]
    public void Serial8250_PassesLinuxAutoconfigAs16550A()
    {
        // drivers/tty/serial/8250/8250_port.c, autoconfig(): the IER probe...
        Out(Ier, 0x00);
        Assert.Equal(0x00, In(Ier) & 0x0f);
        Out(Ier, 0x0f);
        Assert.Equal(0x0f, In(Ier) & 0x0f);
        Out(Ier, 0x00);
        // ...the loopback check...
        Out(Mcr, 0x1a);
        Assert.Equal(0x90, In(Msr) & 0xf0);
        Out(Mcr, 0x0b);
        // ...FIFO detection: IIR bits 7:6 = 3 means a 16550A...
        Out(Lcr, 0x00);
        Out(Fcr, 0x01);
        Assert.Equal(3, In(Iir) >> 6);
        // ...and not a 16750: the 64-byte FIFO bit does not stick.
        Out(Fcr, 0x21);
        Assert.NotEqual(7, In(Iir) >> 5);
        Assert.Empty(_output.ToArray());
    }

    [Fact]
    public void Serial8250_PassesLinuxThreTestAtStartup()
    {
        // serial8250_do_startup: THRI is enabled twice; an IIR without a pending THRE would mark UART_BUG_THRE.
        Out(Ier, 0x02);
        byte iir1 = In(Iir);
        Out(Ier, 0x00);
        Out(Ier, 0x02);
        byte iir = In(Iir);
        Out(Ier, 0x00);
        Assert.Equal(0, iir1 & 0x01);
        Assert.Equal(0, iir & 0x01);
        Assert.Equal(0x40, In(Lsr) & 0x40);
    }

    [Fact]
    public void Serial8250_ThrWriteGoesToOutput()
    {
        LinuxStartup();
        foreach (byte b in "Hello\n"u8) Out(Thr, b);
        Assert.Equal("Hello\n", Encoding.ASCII.GetString(_output.ToArray()));
    }

    [Fact]
    public void Serial8250_LsrReportsTransmitterEmpty()
    {
        Assert.Equal(0x60, In(Lsr));
        Out(Thr, (byte)'x');
        Assert.Equal(0x60, In(Lsr)); // transmission is instant
    }

    [Fact]
    public void Serial8250_DivisorLatchRedirectsRegisters0And1()
    {
        Out(Ier, 0x05);
        Out(Lcr, 0x80);
        Assert.Equal(0x0c, In(Dll)); // 9600 baud as firmware leaves it
        Assert.Equal(0x00, In(Dlm));
        Out(Dll, 0x01);
        Out(Dlm, 0x02);
        Assert.Equal(0x01, In(Dll));
        Assert.Equal(0x02, In(Dlm));
        Assert.Empty(_output.ToArray()); // the divisor write did not transmit
        Assert.Equal(0x80, In(Lcr));

        Out(Lcr, 0x03);
        Assert.Equal(0x05, In(Ier)); // IER untouched by the divisor writes
        Assert.Equal(0x03, In(Lcr));
        Out(Thr, (byte)'z');
        Assert.Equal("z"u8.ToArray(), _output.ToArray());
    }

    [Fact]
    public void Serial8250_IerKeepsOnlyLowFourBits()
    {
        Out(Ier, 0xff);
        Assert.Equal(0x0f, In(Ier));
        Out(Ier, 0xf0);
        Assert.Equal(0x00, In(Ier));
    }

    [Fact]
    public void Serial8250_EnablingThriWithOut2InterruptsOnceAndIirReadAcknowledges()
    {
        Out(Lcr, 0x03);
        Out(Mcr, 0x0b);
        Assert.Equal(0, _irq.Triggers);
        Assert.Equal(0x01, In(Iir));

        Out(Ier, 0x02);
        Assert.Equal(1, _irq.Triggers);
        Assert.Equal(0x02, In(Iir));
        Assert.Equal(0x01, In(Iir));
        Assert.Equal(1, _irq.Triggers);
    }

    [Fact]
    public void Serial8250_IirHasFifoBitsWhenFcrEnablesFifo()
    {
        LinuxStartup();
        Out(Ier, 0x02);
        Assert.Equal(1, _irq.Triggers);
        Assert.Equal(0xc2, In(Iir));
        Assert.Equal(0xc1, In(Iir));
        Out(Fcr, 0x00);
        Assert.Equal(0x01, In(Iir));
    }

    [Fact]
    public void Serial8250_EachTransmitBurstRaisesThreAgain()
    {
        LinuxStartup();
        Out(Ier, 0x02);
        Assert.Equal(0xc2, In(Iir)); // the interrupt handler acknowledges...
        Out(Thr, (byte)'a');         // ...and refills the transmitter
        Out(Thr, (byte)'b');
        Assert.Equal(2, _irq.Triggers); // one new edge, not one per byte
        Assert.Equal(0xc2, In(Iir));
        Assert.Equal(0xc1, In(Iir));
    }

    [Fact]
    public void Serial8250_NoInterruptWithoutOut2()
    {
        Out(Mcr, 0x03); // DTR | RTS, OUT2 clear
        Out(Ier, 0x02);
        Assert.Equal(0, _irq.Triggers);
        Assert.Equal(0x02, In(Iir) & 0x0f); // pending in the UART, but the line to the PIC is gated off
        Out(Ier, 0x02);
        Out(Mcr, 0x0b); // OUT2 opens the gate with an interrupt pending
        Assert.Equal(1, _irq.Triggers);
    }

    [Fact]
    public void Serial8250_ReceivedBytesSetDataReadyAndInterrupt()
    {
        LinuxStartup();
        Out(Ier, 0x01); // RDI
        Assert.True(_uart.Receive("ab"u8));
        Assert.Equal(1, _irq.Triggers);
        Assert.Equal(0x61, In(Lsr));
        Assert.Equal(0xc4, In(Iir));
        Assert.Equal((byte)'a', In(Rbr));
        Assert.Equal(0x61, In(Lsr));
        Assert.Equal((byte)'b', In(Rbr));
        Assert.Equal(0x60, In(Lsr));
        Assert.Equal(0xc1, In(Iir));
        Assert.Equal(0x00, In(Rbr)); // empty FIFO reads zero

        Assert.True(_uart.Receive("c"u8));
        Assert.Equal(2, _irq.Triggers); // the line fell when the FIFO emptied, so this is a new edge
    }

    [Fact]
    public void Serial8250_ReceiveWithoutRdiSetsDataReadyButNoInterrupt()
    {
        LinuxStartup();
        _uart.Receive("q"u8);
        Assert.Equal(0, _irq.Triggers);
        Assert.Equal(0x61, In(Lsr));
        Assert.Equal(0xc1, In(Iir));
        Assert.Equal((byte)'q', In(Rbr));
    }

    [Fact]
    public void Serial8250_ReceivedDataHasPriorityOverThre()
    {
        LinuxStartup();
        Out(Ier, 0x03);
        _uart.Receive("r"u8);
        Assert.Equal(0xc4, In(Iir));
        Assert.Equal(0xc4, In(Iir)); // not acknowledged by the IIR read: only by reading the data
        Assert.Equal((byte)'r', In(Rbr));
        Assert.Equal(0xc2, In(Iir));
        Assert.Equal(0xc1, In(Iir));
    }

    [Theory]
    [InlineData(0x1a, 0x90)] // LOOP | OUT2 | RTS: what Linux's autoconfig checks
    [InlineData(0x1f, 0xf0)]
    [InlineData(0x10, 0x00)]
    [InlineData(0x11, 0x20)] // DTR -> DSR
    [InlineData(0x14, 0x40)] // OUT1 -> RI
    public void Serial8250_LoopbackWiresModemOutputsToMsr(byte mcr, byte msrHigh)
    {
        Out(Mcr, mcr);
        Assert.Equal(msrHigh, In(Msr) & 0xf0);
    }

    [Fact]
    public void Serial8250_MsrShowsCarrierDsrCtsOutsideLoopback()
    {
        Out(Mcr, 0x00);
        Assert.Equal(0xb0, In(Msr));
    }

    [Fact]
    public void Serial8250_McrKeepsFiveBits()
    {
        Out(Mcr, 0xff);
        Assert.Equal(0x1f, In(Mcr));
    }

    [Fact]
    public void Serial8250_LoopbackThrWritesComeBackInRbrNotOutput()
    {
        LinuxStartup();
        Out(Mcr, 0x1b);
        Out(Ier, 0x03);
        Out(Thr, 0x5a);
        Out(Thr, 0xa5);
        Assert.Empty(_output.ToArray());
        Assert.Equal(0x61, In(Lsr));
        Assert.Equal(0x5a, In(Rbr));
        Assert.Equal(0xa5, In(Rbr));
        Assert.Equal(0x60, In(Lsr));
        Assert.Equal(0, _irq.Triggers); // the IRQ output is off in loopback

        Out(Mcr, 0x0b);
        Out(Thr, (byte)'o');
        Assert.Equal("o"u8.ToArray(), _output.ToArray());
    }

    [Fact]
    public void Serial8250_LoopbackOverflowSetsOverrunOnce()
    {
        Out(Mcr, 0x10);
        for (int i = 0; i < Serial8250.ReceiveFifoBytes + 1; i++) Out(Thr, (byte)i);
        Assert.Equal(0x63, In(Lsr)); // DR | OE | THRE | TEMT
        Assert.Equal(0x61, In(Lsr)); // OE clears on read
        for (int i = 0; i < Serial8250.ReceiveFifoBytes; i++) Assert.Equal((byte)i, In(Rbr));
    }

    [Fact]
    public void Serial8250_OverrunRaisesLineStatusInterruptWhenEnabled()
    {
        Out(Mcr, 0x10);
        Out(Ier, 0x05);
        for (int i = 0; i < Serial8250.ReceiveFifoBytes + 1; i++) Out(Thr, (byte)i);
        Assert.Equal(0x06, In(Iir));
        In(Lsr);
        Assert.Equal(0x04, In(Iir));
    }

    [Fact]
    public void Serial8250_ScratchRegisterRoundTrips()
    {
        Out(Scr, 0xa5);
        Assert.Equal(0xa5, In(Scr));
        Out(Scr, 0x5a);
        Assert.Equal(0x5a, In(Scr));
    }

    [Fact]
    public void Serial8250_MultiByteReadClearsUpperBytes()
    {
        Out(Scr, 0x77);
        var data = new byte[] { 0xee, 0xee, 0xee, 0xee };
        _uart.Read(Scr, data);
        Assert.Equal(new byte[] { 0x77, 0, 0, 0 }, data);
    }

    [Fact]
    public void Serial8250_FcrClearReceiveEmptiesFifo()
    {
        LinuxStartup();
        _uart.Receive("stale"u8);
        Assert.Equal(0x61, In(Lsr));
        Out(Fcr, 0x03);
        Assert.Equal(0x60, In(Lsr));
        Assert.Equal(0x00, In(Rbr));
        Assert.Equal(0xc1, In(Iir)); // FIFO still enabled
    }

    [Fact]
    public async Task Serial8250_ReceiveBlocksWhileFifoFullUntilGuestReads()
    {
        byte[] fill = Enumerable.Range(0, Serial8250.ReceiveFifoBytes).Select(i => (byte)i).ToArray();
        Assert.True(_uart.Receive(fill));

        var writer = Task.Run(() => _uart.Receive([0xee]));
        Assert.True(SpinWait.SpinUntil(() => _uart.WritersWaiting == 1, TimeSpan.FromSeconds(10)), "the writer must wait for room");
        Assert.False(writer.IsCompleted);

        Assert.Equal(0, In(Rbr));
        Assert.True(await writer.WaitAsync(TimeSpan.FromSeconds(10)));
        for (int i = 1; i < Serial8250.ReceiveFifoBytes; i++) Assert.Equal((byte)i, In(Rbr));
        Assert.Equal(0xee, In(Rbr));
        Assert.Equal(0x60, In(Lsr));
    }

    [Fact]
    public async Task Serial8250_FifoClearUnblocksWaitingReceive()
    {
        _uart.Receive(new byte[Serial8250.ReceiveFifoBytes]);
        var writer = Task.Run(() => _uart.Receive([0x42]));
        Assert.True(SpinWait.SpinUntil(() => _uart.WritersWaiting == 1, TimeSpan.FromSeconds(10)), "the writer must wait for room");
        Assert.False(writer.IsCompleted);
        Out(Fcr, 0x03);
        Assert.True(await writer.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(0x42, In(Rbr));
    }

    [Fact]
    public async Task Serial8250_ReceiveReturnsFalseWhenCancelledWhileFull()
    {
        _uart.Receive(new byte[Serial8250.ReceiveFifoBytes]);
        using var cts = new CancellationTokenSource();
        var writer = Task.Run(() => _uart.Receive([1, 2, 3], cts.Token));
        Assert.True(SpinWait.SpinUntil(() => _uart.WritersWaiting == 1, TimeSpan.FromSeconds(10)), "the writer must wait for room");
        Assert.False(writer.IsCompleted);
        cts.Cancel();
        Assert.False(await writer.WaitAsync(TimeSpan.FromSeconds(10)));
        var received = new List<byte>();
        while ((In(Lsr) & 0x01) != 0) received.Add(In(Rbr));
        Assert.Equal(new byte[Serial8250.ReceiveFifoBytes], received); // none of the three bytes got in
    }

    [Fact]
    public void Serial8250_OutputFailureIsReportedOnceAndLaterBytesDropped()
    {
        var failures = new List<Exception>();
        var uart = new Serial8250(new BrokenStream(), _irq);
        uart.OutputFailed += failures.Add;
        uart.WriteByte(Thr, (byte)'a');
        uart.WriteByte(Thr, (byte)'b');
        var failure = Assert.Single(failures);
        Assert.IsType<IOException>(failure);
        Assert.Equal(0x60, uart.ReadByte(Lsr)); // the guest still sees a working UART
    }

    private sealed class BrokenStream : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => 0;
        public override long Position { get => 0; set { } }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new IOException("broken pipe");
    }
}
