using Vmm.Devices;
using Vmm.Diagnostics;
using Xunit;

namespace Vmm.Tests.Devices;

public sealed class BootTimerTests
{
    [Fact]
    public void BootTimer_LogsNumberedMarksWithInjectedTime()
    {
        var log = new StringWriter();
        var elapsed = TimeSpan.FromMilliseconds(1234.56);
        var timer = new BootTimer(new Logger(log, LogLevel.Info), () => elapsed);

        timer.Write(0, [0x01]);
        elapsed = TimeSpan.FromMilliseconds(2000);
        timer.Write(0, [0x01, 0x00, 0x00, 0x00]);

        var lines = log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(
        [
            "vmm: boot timer: guest mark 1 at 1234.6 ms since vmm started",
            "vmm: boot timer: guest mark 2 at 2000.0 ms since vmm started",
        ], lines);
    }

    [Fact]
    public void BootTimer_AGuestWritingInALoop_CostsABoundedNumberOfLines()
    {
        var log = new StringWriter();
        var timer = new BootTimer(new Logger(log, LogLevel.Info), () => TimeSpan.Zero);

        for (int i = 0; i < 100_000; i++) timer.Write(0, [0x01]);

        int lines = log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;
        Assert.InRange(lines, 1, 20);
    }

    [Fact]
    public void BootTimer_ReadsAllOnesAndLogsNothing()
    {
        var log = new StringWriter();
        var timer = new BootTimer(new Logger(log, LogLevel.Debug), () => TimeSpan.Zero);
        var data = new byte[] { 0, 0 };
        timer.Read(0, data);
        Assert.Equal(new byte[] { 0xff, 0xff }, data);
        Assert.Equal("", log.ToString());
    }

    [Fact]
    public void BootTimer_IsAtPort0x440()
    {
        Assert.Equal((ushort)0x440, BootTimer.Port);
    }
}
