using Vmm.Vm;

namespace Vmm.Migration;

/// <summary>What the host decides for the VMs a <see cref="MigrationDaemon"/> takes in (vmm migrate-receive's options).</summary>
public sealed record MigrationDaemonSettings
{
    /// <summary>How many migrations may come in at once; a source beyond that is told the target is busy.</summary>
    public int MaxIncoming { get; init; } = 4;
    /// <summary>Take one migration, run that VM, and end with its exit code.</summary>
    public bool Once { get; init; }
    /// <summary>Keep each received VM paused until its control socket resumes it.</summary>
    public bool Paused { get; init; }
    /// <summary>The directories incoming VMs' disks may lie in; copied disks are written into the first.</summary>
    public IReadOnlyList<string> DiskDirs { get; init; } = [];
    /// <summary>Where each VM's console goes (appended), or null for this process's stdout; {name} and {n} expand.</summary>
    public string? SerialLog { get; init; }
    /// <summary>Where each VM's control socket is served, or null for none; {name} and {n} expand.</summary>
    public string? ApiSocket { get; init; }
    /// <summary>The host's part of each VM's configuration (nested KVM workarounds, dirty rings, huge pages); the rest
    /// comes with the VM.</summary>
    public required MachineConfig Host { get; init; }
    /// <summary>How the daemon listens, for its first log line ("plain TCP", "mutual TLS with DIR").</summary>
    public string Transport { get; init; } = "plain TCP";
}
