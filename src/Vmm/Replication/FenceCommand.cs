using System.Diagnostics;
using System.Globalization;
using System.Text;
using Vmm.Diagnostics;

namespace Vmm.Replication;

/// <summary>The operator's command that makes sure a lost primary is dead before its VM is resumed here. Its exit is
/// its answer: 0 means fenced. It runs at most <paramref name="timeout"/> (then it and what it started are killed, and
/// that counts as not fenced); a child it leaves holding its output does not hold up the failover beyond a short grace.</summary>
public sealed class FenceCommand(string command, TimeSpan timeout, Logger log)
{
    private static readonly TimeSpan OutputGrace = TimeSpan.FromSeconds(2);

    /// <summary>Runs it for VM <paramref name="name"/>'s replica at <paramref name="epoch"/>, lost by the primary at
    /// <paramref name="primary"/> (in VMM_VM_NAME, VMM_EPOCH, VMM_PRIMARY); null when it says the primary is fenced,
    /// otherwise why not.</summary>
    public string? Run(string name, long epoch, string? primary)
    {
        log.Info($"standby: fencing the primary: {command}");
        var start = new ProcessStartInfo("/bin/sh", ["-c", command]) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["VMM_VM_NAME"] = name;
        start.Environment["VMM_EPOCH"] = epoch.ToString(CultureInfo.InvariantCulture);
        start.Environment["VMM_PRIMARY"] = primary ?? "";
        try
        {
            using var process = Process.Start(start)!;
            var said = new StringBuilder();
            // Not disposed: a process the fence command left behind may end its output, and signal this, long after.
            var outputEnded = new CountdownEvent(2);
            void Collect(DataReceivedEventArgs e)
            {
                if (e.Data is null) outputEnded.Signal();
                else lock (said) said.AppendLine(e.Data);
            }
            process.OutputDataReceived += (_, e) => Collect(e);
            process.ErrorDataReceived += (_, e) => Collect(e);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            if (!process.WaitForExit(timeout))
            {
                process.Kill(entireProcessTree: true);
                return $"it ran past --fence-timeout-s {timeout.TotalSeconds:0}";
            }
            // Its exit is its answer. Something it left running may hold its output open: that is not waited for.
            bool ended = outputEnded.Wait(OutputGrace);
            string text;
            lock (said) text = said.ToString().Trim();
            if (text.Length > 0) log.Info($"standby: the fence command said: {text}");
            if (!ended) log.Warning("standby: the fence command exited, but something it started still holds its output open");
            return process.ExitCode == 0 ? null : $"it exited with {process.ExitCode}";
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
        {
            return $"it could not run: {e.Message}";
        }
    }
}
