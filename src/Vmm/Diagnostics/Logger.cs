namespace Vmm.Diagnostics;

public enum LogLevel { Debug, Info, Warning, Error }

/// <summary>The VMM's own messages, on stderr, prefixed so they never mix with the guest's console
/// (which goes to stdout or a file). Thread-safe: vCPU and device threads log.</summary>
public sealed class Logger(TextWriter output, LogLevel minimumLevel)
{
    private readonly object _lock = new();

    public static Logger Stderr(LogLevel minimumLevel) => new(Console.Error, minimumLevel);

    public LogLevel MinimumLevel => minimumLevel;

    public void Debug(string message) => Write(LogLevel.Debug, message);
    public void Info(string message) => Write(LogLevel.Info, message);
    public void Warning(string message) => Write(LogLevel.Warning, message);
    public void Error(string message) => Write(LogLevel.Error, message);

    public void Write(LogLevel level, string message)
    {
        if (level < minimumLevel) return;
        string prefix = level switch
        {
            LogLevel.Warning => "vmm: warning: ",
            LogLevel.Error => "vmm: error: ",
            _ => "vmm: ",
        };
        lock (_lock)
        {
            output.WriteLine(prefix + message);
            output.Flush();
        }
    }
}
