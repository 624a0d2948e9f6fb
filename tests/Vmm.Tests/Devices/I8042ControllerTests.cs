using Vmm.Devices;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Devices;

public sealed class I8042ControllerTests
{
    // Offsets as the bus delivers them through BusDeviceWindow: data port 0x60 -> 0, command/status port 0x64 -> 4.
    private const ulong Data = 0, Command = 4;

    private readonly RecordingVmControl _vm = new();
    private readonly CountingInterruptLine _irq = new();
    private readonly I8042Controller _kbc;

    public I8042ControllerTests() => _kbc = new I8042Controller(_vm, _irq);

    private byte Status() => _kbc.ReadByte(Command);
    private byte ReadData() => _kbc.ReadByte(Data);
    private void SendCommand(byte command) => _kbc.WriteByte(Command, command);
    private void SendData(byte value) => _kbc.WriteByte(Data, value);

    private byte[] Drain()
    {
        var bytes = new List<byte>();
        while ((Status() & 0x01) != 0) bytes.Add(ReadData());
        return bytes.ToArray();
    }

    [Fact]
    public void I8042Controller_SelfTestAnswers0x55()
    {
        SendCommand(0xaa);
        Assert.Equal(new byte[] { 0x55 }, Drain());
    }

    [Fact]
    public void I8042Controller_KeyboardInterfaceTestAnswersZero()
    {
        SendCommand(0xab);
        Assert.Equal(new byte[] { 0x00 }, Drain());
    }

    [Fact]
    public void I8042Controller_ReadsDefaultConfigByte()
    {
        SendCommand(0x20);
        Assert.Equal(new byte[] { 0x65 }, Drain()); // keyboard IRQ, system flag, AUX disabled, translate
    }

    [Fact]
    public void I8042Controller_WritesAndReadsBackConfigByte()
    {
        SendCommand(0x60);
        SendData(0x47);
        Assert.Empty(Drain()); // the parameter byte is not sent to the keyboard
        SendCommand(0x20);
        Assert.Equal(new byte[] { 0x47 }, Drain());
    }

    [Fact]
    public void I8042Controller_AuxAndKeyboardDisableCommandsUpdateConfig()
    {
        SendCommand(0xa8); // enable AUX: clears bit 5
        SendCommand(0xad); // disable keyboard: sets bit 4
        SendCommand(0x20);
        Assert.Equal(new byte[] { 0x55 }, Drain());
        SendCommand(0xa7);
        SendCommand(0xae);
        SendCommand(0x20);
        Assert.Equal(new byte[] { 0x65 }, Drain());
    }

    [Fact]
    public void I8042Controller_StatusOutputFullFollowsQueue()
    {
        Assert.Equal(0, Status() & 0x01);
        Assert.Equal(0x04, Status() & 0x04); // system flag: POST passed
        SendCommand(0xaa);
        SendCommand(0xab);
        Assert.Equal(0x01, Status() & 0x01);
        Assert.Equal(0x55, ReadData());
        Assert.Equal(0x01, Status() & 0x01);
        Assert.Equal(0x00, ReadData());
        Assert.Equal(0, Status() & 0x01);
        Assert.Equal(0x00, ReadData()); // empty: reads zero
    }

    [Fact]
    public void I8042Controller_StatusBit3TracksCommandOrData()
    {
        SendCommand(0xa7);
        Assert.Equal(0x08, Status() & 0x08);
        SendData(0xf4);
        Assert.Equal(0x00, Status() & 0x08);
    }

    [Fact]
    public void I8042Controller_KeyboardResetAcksAndPassesSelfTest()
    {
        SendData(0xff);
        Assert.Equal(new byte[] { 0xfa, 0xaa }, Drain());
    }

    [Fact]
    public void I8042Controller_GetIdReportsMf2Keyboard()
    {
        SendData(0xf2);
        Assert.Equal(new byte[] { 0xfa, 0xab, 0x83 }, Drain());
    }

    [Fact]
    public void I8042Controller_SetLedsTakesParameterByte()
    {
        SendData(0xed);
        Assert.Equal(new byte[] { 0xfa }, Drain());
        SendData(0x07); // LED bits, not a command
        Assert.Equal(new byte[] { 0xfa }, Drain());
        SendData(0xf2); // next byte is a command again
        Assert.Equal(new byte[] { 0xfa, 0xab, 0x83 }, Drain());
    }

    [Fact]
    public void I8042Controller_ParameterThatLooksLikeResetIsNotAReset()
    {
        SendData(0xf3);  // set typematic rate
        SendData(0xff);  // rate parameter
        Assert.Equal(new byte[] { 0xfa, 0xfa }, Drain());
    }

    [Fact]
    public void I8042Controller_GetScancodeSetAnswersSet2()
    {
        SendData(0xf0);
        SendData(0x00);
        Assert.Equal(new byte[] { 0xfa, 0xfa, 0x02 }, Drain());
        SendData(0xf0);
        SendData(0x02); // set, not get: ack only
        Assert.Equal(new byte[] { 0xfa, 0xfa }, Drain());
    }

    [Fact]
    public void I8042Controller_OtherKeyboardCommandsAreAcked()
    {
        SendData(0xf4); // enable scanning
        SendData(0xf5); // disable scanning
        Assert.Equal(new byte[] { 0xfa, 0xfa }, Drain());
    }

    [Fact]
    public void I8042Controller_PulseResetCommandStopsVmAsGuestReset()
    {
        SendCommand(0xfe);
        var stop = Assert.Single(_vm.Stops);
        Assert.Equal(VmStopKind.GuestReset, stop.Kind);
        Assert.Equal(0, stop.ExitCode);
        Assert.Contains("0xfe", stop.Description);
    }

    [Fact]
    public void I8042Controller_OutputPortWriteWithResetLineLowResets()
    {
        SendCommand(0xd1);
        SendData(0xfe);
        var stop = Assert.Single(_vm.Stops);
        Assert.Equal(VmStopKind.GuestReset, stop.Kind);
        Assert.Equal(0, stop.ExitCode);
        Assert.Empty(Drain()); // consumed by the controller, not acked by the keyboard
    }

    [Fact]
    public void I8042Controller_OutputPortWriteWithResetLineHighDoesNotReset()
    {
        SendCommand(0xd1);
        SendData(0xdf); // A20 etc., bit 0 set
        Assert.Empty(_vm.Stops);
        SendCommand(0xd0);
        Assert.Equal(new byte[] { 0xdf }, Drain());
    }

    [Fact]
    public void I8042Controller_DefaultOutputPortHasResetLineHigh()
    {
        SendCommand(0xd0);
        Assert.Equal(new byte[] { 0x01 }, Drain());
        Assert.Empty(_vm.Stops);
    }

    [Fact]
    public void I8042Controller_WriteKeyboardOutputBufferEchoesByte()
    {
        SendCommand(0xd2);
        SendData(0x1c);
        Assert.Equal(new byte[] { 0x1c }, Drain());
    }

    [Fact]
    public void I8042Controller_KeyboardInterruptWhenByteBecomesAvailable()
    {
        SendData(0xff); // two bytes queued: one edge now...
        Assert.Equal(1, _irq.Triggers);
        Assert.Equal(0xfa, ReadData());
        Assert.Equal(2, _irq.Triggers); // ...and one for the next byte once the first is read
        Assert.Equal(0xaa, ReadData());
        Assert.Equal(2, _irq.Triggers);

        SendCommand(0xaa);
        Assert.Equal(3, _irq.Triggers);
    }

    [Fact]
    public void I8042Controller_NoInterruptWhileOutputAlreadyPending()
    {
        SendCommand(0xaa);
        SendCommand(0xab);
        Assert.Equal(1, _irq.Triggers);
    }

    [Fact]
    public void I8042Controller_NoKeyboardInterruptWhenConfigBit0Clear()
    {
        SendCommand(0x60);
        SendData(0x64);
        SendData(0xff);
        SendCommand(0xaa);
        Assert.Equal(new byte[] { 0xfa, 0xaa, 0x55 }, Drain());
        Assert.Equal(0, _irq.Triggers);
    }

    [Fact]
    public void I8042Controller_MultiByteReadClearsUpperBytes()
    {
        SendCommand(0xaa);
        var data = new byte[] { 0xee, 0xee };
        _kbc.Read(Data, data);
        Assert.Equal(new byte[] { 0x55, 0x00 }, data);
    }

    [Fact]
    public void I8042Controller_WorksBehindBusWindowsAtPorts60And64()
    {
        var bus = new DeviceBus("pio", new Vmm.Diagnostics.Logger(TextWriter.Null, Vmm.Diagnostics.LogLevel.Error));
        bus.Register(I8042Controller.DataPort, 1, new BusDeviceWindow(_kbc, 0));
        bus.Register(I8042Controller.CommandPort, 1, new BusDeviceWindow(_kbc, I8042Controller.CommandPort - I8042Controller.DataPort));
        bus.Write(0x64, new byte[] { 0xaa });
        var status = new byte[1];
        bus.Read(0x64, status);
        Assert.Equal(0x01, status[0] & 0x01);
        var data = new byte[1];
        bus.Read(0x60, data);
        Assert.Equal(0x55, data[0]);
    }
}
