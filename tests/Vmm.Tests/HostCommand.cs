using System.Diagnostics;
using Xunit;

namespace Vmm.Tests;

/// <summary>Runs a host program the tests need (gcc, mkfs.ext4, dumpe2fs, ip, ping, ...).</summary>
internal static class HostCommand
{
    /// <summary>Runs the command and returns its exit code and its stdout followed by its stderr.</summary>
    public static (int ExitCode, string Output) Run(params string[] command)
    {
        var (exitCode, stdout, stderr) = Execute(command);
        return (exitCode, stdout + stderr);
    }

    /// <summary>Runs the command, fails the test if it fails, and returns its stdout.</summary>
    public static string Checked(params string[] command)
    {
        var (exitCode, stdout, stderr) = Execute(command);
        Assert.True(exitCode == 0, $"{string.Join(' ', command)} failed ({exitCode}): {stderr}");
        return stdout;
    }

    private static (int ExitCode, string Stdout, string Stderr) Execute(string[] command)
    {
        using var process = Process.Start(new ProcessStartInfo(command[0], command.Skip(1)) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}
