using System.Diagnostics;
using System.Text;

namespace Vmm.Tests.EndToEnd;

/// <summary>A `vmm` child process the test talks to while it runs (a migration source or target): its
/// console and log are collected as they come, and it is killed if the test leaves it running.</summary>
public sealed class RunningVmm : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _console = new(), _log = new();
    private readonly Task _pumps;
    private bool _disposed;

    public RunningVmm(IEnumerable<string> arguments, IReadOnlyList<string>? wrapper = null)
    {
        var command = (wrapper ?? []).Concat(["dotnet", RepositoryPaths.VmmDll]).Concat(arguments).ToList();
        var info = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (string a in command.Skip(1)) info.ArgumentList.Add(a);
        _process = Process.Start(info)!;
        _process.StandardInput.Close();
        _pumps = Task.WhenAll(Pump(_process.StandardOutput, _console), Pump(_process.StandardError, _log));
    }

    public int Id => _process.Id;
    public string Console { get { lock (_console) return _console.ToString(); } }
    public string Log { get { lock (_log) return _log.ToString(); } }
    public bool HasExited => _process.HasExited;

    /// <summary>Waits until <paramref name="condition"/> holds for the console and log; false on timeout or exit.</summary>
    public bool WaitFor(Func<string, string, bool> condition, TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < timeout)
        {
            if (condition(Console, Log)) return true;
            if (_process.HasExited)
            {
                _pumps.Wait(TimeSpan.FromSeconds(5));
                return condition(Console, Log);
            }
            Thread.Sleep(20);
        }
        return false;
    }

    public bool WaitForConsole(string text, TimeSpan timeout) => WaitFor((console, _) => console.Contains(text), timeout);

    /// <summary>The exit code, or null if it is still running at the timeout.</summary>
    public int? WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout)) return null;
        _process.WaitForExit();
        _pumps.Wait(TimeSpan.FromSeconds(10));
        return _process.ExitCode;
    }

    public void Kill() => _process.Kill(entireProcessTree: true);

    /// <summary>Sends SIGTERM, as an operator stopping vmm would; vmm then stops its VM cleanly.</summary>
    public void Terminate() => Process.Start("kill", ["-TERM", Id.ToString()])!.WaitForExit();

    public override string ToString() => $"console:\n{Console}\nlog:\n{Log}";

    private static async Task Pump(StreamReader reader, StringBuilder into)
    {
        char[] buffer = new char[4096];
        int read;
        while ((read = await reader.ReadAsync(buffer)) > 0)
            lock (into) into.Append(buffer, 0, read);
    }

    /// <summary>Kills the process if it still runs; a second call does nothing (a test and its cleanup may both call it).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (!_process.HasExited) Kill();
        _process.WaitForExit();
        _process.Dispose();
    }
}
