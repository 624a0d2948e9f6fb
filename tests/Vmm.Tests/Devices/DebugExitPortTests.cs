using Vmm.Devices;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Devices;

public sealed class DebugExitPortTests
{
    private readonly RecordingVmControl _vm = new();

    [Theory]
    [InlineData(0x00, 1)]
    [InlineData(0x01, 3)]
    [InlineData(0x10, 33)]
    [InlineData(0x7f, 255)]
    public void DebugExitPort_ByteWriteStopsWithOddExitCode(byte value, int exitCode)
    {
        new DebugExitPort(_vm).Write(0, [value]);
        var stop = Assert.Single(_vm.Stops);
        Assert.Equal(VmStopKind.GuestExitPort, stop.Kind);
        Assert.Equal(exitCode, stop.ExitCode);
        Assert.Equal($"guest wrote 0x{value:x} to the exit port", stop.Description);
    }

    [Fact]
    public void DebugExitPort_WordWriteUsesBothBytesLittleEndian()
    {
        new DebugExitPort(_vm).Write(0, [0x21, 0x03]);
        var stop = Assert.Single(_vm.Stops);
        Assert.Equal("guest wrote 0x321 to the exit port", stop.Description);
        Assert.Equal(0x43, stop.ExitCode); // ((0x321 << 1) | 1) & 0xff
    }

    [Fact]
    public void DebugExitPort_DwordWriteUsesAllFourBytes()
    {
        new DebugExitPort(_vm).Write(0, [0x05, 0x00, 0x00, 0x80]);
        var stop = Assert.Single(_vm.Stops);
        Assert.Equal("guest wrote 0x80000005 to the exit port", stop.Description);
        Assert.Equal(11, stop.ExitCode);
    }

    [Fact]
    public void DebugExitPort_ReadsAllOnes()
    {
        var data = new byte[] { 0, 0 };
        new DebugExitPort(_vm).Read(0, data);
        Assert.Equal(new byte[] { 0xff, 0xff }, data);
        Assert.Empty(_vm.Stops);
    }

    [Fact]
    public void DebugExitPort_IsAtQemuIsaDebugExitPort()
    {
        Assert.Equal((ushort)0x501, DebugExitPort.Port);
    }
}
