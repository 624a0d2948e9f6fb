using System.Diagnostics;
using System.Text;

namespace Vmm.Tests.EndToEnd;

/// <summary>Runs the real `vmm` command as a child process and collects its console and log.</summary>
internal sealed class VmmProcess
{
    /// <param name="MarkerSeenAt">When each requested marker first appeared on the console, from process start.</param>
    public sealed record Result(int ExitCode, string Console, string Log, TimeSpan Elapsed, IReadOnlyDictionary<string, TimeSpan> MarkerSeenAt);

    /// <summary>Runs vmm; sends it SIGTERM when <paramref name="terminateWhen"/> (given the console so far and
    /// the elapsed time) says so, or at <paramref name="timeout"/>.</summary>
    public static Result Run(IEnumerable<string> arguments, TimeSpan timeout, Func<string, TimeSpan, bool>? terminateWhen = null, string? standardInput = null, IReadOnlyList<string>? markers = null, IReadOnlyList<string>? wrapper = null)
    {
        // A wrapper (e.g. "ip netns exec NS") runs vmm inside another context.
        var command = (wrapper ?? []).Concat(["dotnet", RepositoryPaths.VmmDll]).ToList();
        var info = new ProcessStartInfo(command[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (string a in command.Skip(1)) info.ArgumentList.Add(a);
        foreach (string a in arguments) info.ArgumentList.Add(a);
        var console = new StringBuilder();
        var log = new StringBuilder();
        var stopwatch = Stopwatch.StartNew();
        using var process = Process.Start(info)!;
        if (standardInput is not null) process.StandardInput.Write(standardInput);
        process.StandardInput.Close();
        // The console is read as raw bytes: a guest's output need not end in a newline.
        var markerSeenAt = new Dictionary<string, TimeSpan>();
        var consolePump = Task.Run(() => Pump(process.StandardOutput, console, text =>
        {
            foreach (string marker in markers ?? [])
                if (!markerSeenAt.ContainsKey(marker) && text.Contains(marker)) markerSeenAt[marker] = stopwatch.Elapsed;
        }));
        var logPump = Task.Run(() => Pump(process.StandardError, log, _ => { }));
        while (!process.WaitForExit(500))
        {
            bool done;
            lock (console) done = terminateWhen?.Invoke(console.ToString(), stopwatch.Elapsed) == true;
            if (done || stopwatch.Elapsed > timeout)
            {
                // SIGTERM: vmm stops the VM cleanly; that path is part of what is tested.
                Process.Start("kill", ["-TERM", process.Id.ToString()])!.WaitForExit();
                if (!process.WaitForExit(30_000)) process.Kill(entireProcessTree: true);
                break;
            }
        }
        process.WaitForExit();
        Task.WaitAll(consolePump, logPump);
        lock (console) lock (log) return new Result(process.ExitCode, console.ToString(), log.ToString(), stopwatch.Elapsed, markerSeenAt);
    }

    private static void Pump(StreamReader reader, StringBuilder into, Action<string> onText)
    {
        char[] buffer = new char[4096];
        int read;
        while ((read = reader.Read(buffer, 0, buffer.Length)) > 0)
            lock (into)
            {
                into.Append(buffer, 0, read);
                onText(into.ToString());
            }
    }
}
