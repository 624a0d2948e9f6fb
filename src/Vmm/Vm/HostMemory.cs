using System.Globalization;

namespace Vmm.Vm;

/// <summary>How much memory this host has, from /proc/meminfo, to tell a guest that can never fit (a typo such
/// as <c>--memory 1T</c> on a 24 GiB host) from one that merely may not: RAM is mapped lazily, so without this
/// check such a guest boots and is killed later, when it touches the memory that is not there.</summary>
public static class HostMemory
{
    public const string MeminfoPath = "/proc/meminfo";

    /// <summary>Null when the guest fits in RAM and swap; otherwise why it cannot.</summary>
    public static string? Refusal(ulong guestBytes, string meminfo)
    {
        if (Field(meminfo, "MemTotal") is not { } ram) return null;
        ulong swap = Field(meminfo, "SwapTotal") ?? 0;
        if (guestBytes <= ram + swap) return null;
        return $"--memory {Describe(guestBytes)} is more than this host has ({Describe(ram)} of RAM and {Describe(swap)} of swap)";
    }

    /// <summary>Null when the host has that much memory available now; otherwise a warning to show.</summary>
    public static string? Warning(ulong guestBytes, string meminfo)
    {
        if (Field(meminfo, "MemAvailable") is not { } available || guestBytes <= available) return null;
        return $"--memory {Describe(guestBytes)} is more than the {Describe(available)} this host has available now: " +
               "the guest runs, but may be stopped by the kernel's OOM killer if it uses all of it";
    }

    public static string ReadMeminfo()
    {
        try
        {
            return File.ReadAllText(MeminfoPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "";
        }
    }

    /// <summary>A "Name:   1234 kB" line of /proc/meminfo, in bytes.</summary>
    private static ulong? Field(string meminfo, string name)
    {
        foreach (string line in meminfo.Split('\n'))
        {
            if (!line.StartsWith(name + ":", StringComparison.Ordinal)) continue;
            string[] parts = line[(name.Length + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 2 && parts[1] == "kB" && ulong.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out ulong kib) && kib < ulong.MaxValue >> 10)
                return kib << 10;
        }
        return null;
    }

    private static string Describe(ulong bytes) =>
        bytes >= 1UL << 30 ? $"{bytes / (double)(1UL << 30):0.#} GiB" : $"{bytes >> 20} MiB";
}
