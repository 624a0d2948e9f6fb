using Vmm.State;

namespace Vmm.Migration;

/// <summary>The disk paths of an incoming VM come from the network: each must lie, with every symlink along it
/// resolved, inside a directory the operator named with --disk-dir (resolved the same way), and the path checked is
/// the path then opened.</summary>
public static class DiskDirectories
{
    /// <summary>The most symlinks one path may pass through (Linux's own limit).</summary>
    private const int MaxSymlinks = 40;

    /// <summary>Refuses a disk outside the directories; returns the description with each disk at its resolved path.</summary>
    public static MachineDescription CheckAllowed(MachineDescription description, IReadOnlyList<string> diskDirs)
    {
        var allowed = diskDirs.Select(d => Path.TrimEndingDirectorySeparator(RealPath(d)) + Path.DirectorySeparatorChar).ToList();
        var disks = new List<Devices.Virtio.BlockDiskConfig>();
        foreach (var disk in description.Disks)
        {
            string real = RealPath(disk.Path);
            if (!allowed.Any(dir => real.StartsWith(dir, StringComparison.Ordinal)))
                throw new ConfigurationException(allowed.Count == 0
                    ? $"the VM has the disk {disk.Path}, and this target serves no disk directory (start vmm migrate-receive with --disk-dir DIR)"
                    : $"the VM's disk {disk.Path} is outside the directories this target serves ({string.Join(", ", diskDirs)})");
            disks.Add(disk with { Path = real });
        }
        return description with { Disks = disks };
    }

    /// <summary>The path with every symlink along it resolved, as realpath(3) does, except that components which do not
    /// exist yet (an image about to be copied here) are kept as they are. "..", where the path has it, is taken
    /// lexically first; since the result is what gets opened, what is checked is what is used either way.</summary>
    public static string RealPath(string path)
    {
        string full = Path.GetFullPath(path);
        for (int links = 0; links <= MaxSymlinks; links++)
        {
            string? relinked = FirstSymlinkResolved(full);
            if (relinked is null) return full;
            full = relinked;
        }
        throw new ConfigurationException($"{path}: too many levels of symbolic links");
    }

    /// <summary>The path with its first symlink component replaced by the link's target, or null when it has none.</summary>
    private static string? FirstSymlinkResolved(string full)
    {
        string[] parts = full.Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        string current = Path.DirectorySeparatorChar.ToString();
        for (int i = 0; i < parts.Length; i++)
        {
            string next = Path.Join(current, parts[i]);
            if (new FileInfo(next).LinkTarget is { } target)
                return Path.GetFullPath(Path.Join(Path.IsPathRooted(target) ? target : Path.Join(current, target), string.Join(Path.DirectorySeparatorChar, parts[(i + 1)..])));
            current = next;
        }
        return null;
    }
}
