using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Vm;

public sealed class ExitCodesTests
{
    [Fact]
    public void ExitCodes_VmmOwnCodesAreDocumentedEvenValues()
    {
        Assert.Equal(0, ExitCodes.GuestFinished);
        Assert.Equal(2, ExitCodes.VmmError);
        Assert.Equal(4, ExitCodes.Crash);
        Assert.Equal(6, ExitCodes.EmulationFailure);
    }

    [Theory]
    [InlineData(2, 130)]  // SIGINT
    [InlineData(15, 143)] // SIGTERM
    [InlineData(1, 129)]  // SIGHUP
    public void ExitCodes_SignalIs128PlusNumber(int signal, int expected)
    {
        Assert.Equal(expected, ExitCodes.Signal(signal));
    }

    [Theory]
    [InlineData(0u, 1)]
    [InlineData(1u, 3)]
    [InlineData(0x31u, 0x63)]
    [InlineData(0x7fu, 0xff)]
    [InlineData(0x80u, 1)]          // only 8 bits reach the parent process
    [InlineData(0xffff_ffffu, 0xff)]
    public void ExitCodes_ExitPortCodesAreOddAndFitInAByte(uint value, int expected)
    {
        int code = ExitCodes.FromExitPort(value);
        Assert.Equal(expected, code);
        Assert.Equal(1, code & 1);
        Assert.InRange(code, 1, 255);
    }

    [Fact]
    public void ExitCodes_ExitPortNeverCollidesWithVmmCodes()
    {
        int[] own = [ExitCodes.GuestFinished, ExitCodes.VmmError, ExitCodes.Crash, ExitCodes.EmulationFailure];
        for (uint v = 0; v < 256; v++) Assert.DoesNotContain(ExitCodes.FromExitPort(v), own);
    }
}
