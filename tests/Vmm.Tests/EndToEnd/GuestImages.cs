using System.Diagnostics;

namespace Vmm.Tests.EndToEnd;

/// <summary>The Linux guest built by guest-images/build.sh (cached after the first build on a machine).</summary>
internal static class GuestImages
{
    private static readonly Lazy<string> DirectoryLazy = new(Build);

    public static string Directory => DirectoryLazy.Value;
    public static string BzImage => Path.Combine(Directory, "bzImage");
    public static string Vmlinux => Path.Combine(Directory, "vmlinux");
    public static string Initramfs => Path.Combine(Directory, "initramfs.cpio");

    private static string Build()
    {
        string script = Path.Combine(RepositoryPaths.Root, "guest-images", "build.sh");
        using var process = Process.Start(new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true })!;
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new InvalidOperationException($"{script} failed with exit code {process.ExitCode}");
        return output.Trim().Split('\n').Last();
    }
}
