using Vmm.State;

namespace Vmm.Cli;

/// <summary>The disk paths of an incoming VM come from the network: each must lie, after normalizing and
/// following a symlink, inside a directory the operator named with --disk-dir.</summary>
public static class DiskDirectories
{
    public static void CheckAllowed(MachineDescription description, IReadOnlyList<string> diskDirs)
    {
        var allowed = diskDirs.Select(d => Path.TrimEndingDirectorySeparator(Path.GetFullPath(d)) + Path.DirectorySeparatorChar).ToList();
        foreach (var disk in description.Disks)
        {
            string full = Path.GetFullPath(disk.Path);
            string resolved = File.Exists(full) ? new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full : full;
            if (!allowed.Any(dir => full.StartsWith(dir, StringComparison.Ordinal) && resolved.StartsWith(dir, StringComparison.Ordinal)))
                throw new ConfigurationException(allowed.Count == 0
                    ? $"the VM has the disk {disk.Path}, and this target serves no disk directory (start vmm migrate-receive with --disk-dir DIR)"
                    : $"the VM's disk {disk.Path} is outside the directories this target serves ({string.Join(", ", diskDirs)})");
        }
    }
}
