using System.Diagnostics;

namespace Vmm.Diagnostics;

/// <summary>Log lines a guest can cause (a boot-timer mark, a device it broke), with a budget: up to
/// <c>burst</c> lines at once, refilled at <c>burst</c> lines per <c>period</c>. Lines over the budget are
/// dropped and counted; the next line that goes out says how many were. A guest that repeats a mistake in a
/// loop then costs a few lines, not a flood on the host's log.</summary>
public sealed class RateLimitedLog
{
    private readonly Logger _log;
    private readonly int _burst;
    private readonly long _ticksPerLine;
    private readonly Func<long> _now;
    private readonly object _lock = new();
    private double _tokens;
    private long _lastRefill;
    private long _suppressed;

    /// <param name="now">Stopwatch ticks (tests give their own clock).</param>
    public RateLimitedLog(Logger log, int burst = 10, TimeSpan? period = null, Func<long>? now = null)
    {
        if (burst < 1) throw new ArgumentOutOfRangeException(nameof(burst), burst, "at least one line");
        _log = log;
        _burst = burst;
        _ticksPerLine = Math.Max(1, (long)((period ?? TimeSpan.FromSeconds(10)).TotalSeconds * Stopwatch.Frequency / burst));
        _now = now ?? Stopwatch.GetTimestamp;
        _tokens = burst;
        _lastRefill = _now();
    }

    /// <summary>Lines dropped so far.</summary>
    public long SuppressedLines { get { lock (_lock) return _suppressed; } }

    public void Info(string message) => Write(LogLevel.Info, message);
    public void Warning(string message) => Write(LogLevel.Warning, message);
    public void Error(string message) => Write(LogLevel.Error, message);

    private void Write(LogLevel level, string message)
    {
        long dropped;
        lock (_lock)
        {
            long now = _now();
            _tokens = Math.Min(_burst, _tokens + (double)(now - _lastRefill) / _ticksPerLine);
            _lastRefill = now;
            if (_tokens < 1)
            {
                _suppressed++;
                return;
            }
            _tokens--;
            dropped = _suppressed;
            _suppressed = 0;
        }
        if (dropped > 0) message += $" ({dropped} earlier lines like it were dropped)";
        _log.Write(level, message);
    }
}
