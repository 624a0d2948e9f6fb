using System.Diagnostics;
using System.Text;

namespace Vmm.Tests.EndToEnd;

/// <summary>Runs the real `vmm` command as a child process and collects its console and log.</summary>
internal sealed class VmmProcess
{
    public sealed record Result(int ExitCode, string Console, string Log, TimeSpan Elapsed);

    public static Result Run(IEnumerable<string> arguments, TimeSpan timeout, Func<string, bool>? stopWhenConsoleHas = null)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        info.ArgumentList.Add(RepositoryPaths.VmmDll);
        foreach (string a in arguments) info.ArgumentList.Add(a);
        var console = new StringBuilder();
        var log = new StringBuilder();
        var stopwatch = Stopwatch.StartNew();
        using var process = Process.Start(info)!;
        process.StandardInput.Close();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (console) console.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        while (!process.WaitForExit(500))
        {
            bool done;
            lock (console) done = stopWhenConsoleHas?.Invoke(console.ToString()) == true;
            if (done || stopwatch.Elapsed > timeout)
            {
                // SIGTERM: vmm stops the VM cleanly; that path is part of what is tested.
                Process.Start("kill", ["-TERM", process.Id.ToString()])!.WaitForExit();
                if (!process.WaitForExit(30_000)) process.Kill(entireProcessTree: true);
                break;
            }
        }
        process.WaitForExit();
        lock (console) lock (log) return new Result(process.ExitCode, console.ToString(), log.ToString(), stopwatch.Elapsed);
    }
}
