using System.Diagnostics;
using Vmm.Diagnostics;
using Xunit;

namespace Vmm.Tests.Diagnostics;

public sealed class RateLimitedLogTests
{
    private readonly StringWriter _output = new();
    private long _now;

    private RateLimitedLog Create(int burst, TimeSpan period) => new(new Logger(_output, LogLevel.Debug), burst, period, () => _now);

    private string[] Lines => _output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);

    [Fact]
    public void ABurst_GoesOutThenLinesAreDroppedAndCounted()
    {
        var log = Create(burst: 3, TimeSpan.FromSeconds(3));
        for (int i = 0; i < 10; i++) log.Warning($"line {i}");

        Assert.Equal(["vmm: warning: line 0", "vmm: warning: line 1", "vmm: warning: line 2"], Lines);
        Assert.Equal(7, log.SuppressedLines);
    }

    [Fact]
    public void TheBudgetRefills_AndTheNextLineSaysHowManyWereDropped()
    {
        var log = Create(burst: 2, TimeSpan.FromSeconds(2));
        for (int i = 0; i < 5; i++) log.Error($"line {i}");

        _now += Stopwatch.Frequency; // one second: one line's worth
        log.Error("after a second");
        log.Error("too soon again");

        Assert.Equal(["vmm: error: line 0", "vmm: error: line 1", "vmm: error: after a second (3 earlier lines like it were dropped)"], Lines);
        Assert.Equal(1, log.SuppressedLines);
    }

    [Fact]
    public void ALongQuiet_DoesNotSaveUpMoreThanOneBurst()
    {
        var log = Create(burst: 2, TimeSpan.FromSeconds(1));
        _now += Stopwatch.Frequency * 3600;
        for (int i = 0; i < 5; i++) log.Info($"line {i}");

        Assert.Equal(2, Lines.Length);
    }
}
