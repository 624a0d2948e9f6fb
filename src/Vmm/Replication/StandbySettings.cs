using Vmm.Vm;

namespace Vmm.Replication;

/// <summary>What the host decides for a <see cref="StandbyDaemon"/> (vmm standby's options).</summary>
public sealed record StandbySettings
{
    /// <summary>The one VM this standby holds, or null for the first admitted.</summary>
    public string? Name { get; init; }
    /// <summary>Where the replica's disk images are kept.</summary>
    public required string DiskDir { get; init; }
    /// <summary>How long the primary may be silent before it counts as lost.</summary>
    public TimeSpan FailoverTimeout { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>Run with /bin/sh -c to fence a lost primary before its VM is resumed here; null: the operator's
    /// <c>vmm ctl failover</c> resumes it.</summary>
    public string? FenceCommand { get; init; }
    /// <summary>How long the fence command may run, or (without one) how long whoever fences takes; told to the primary.</summary>
    public TimeSpan FenceTimeout { get; init; }
    /// <summary>Where the resumed VM's console goes (appended), or null for this process's stdout; {name} expands.</summary>
    public string? SerialLog { get; init; }
    /// <summary>The host's part of the resumed VM's configuration; the rest comes with the replica.</summary>
    public required MachineConfig Host { get; init; }
    /// <summary>How the standby listens, for its first log line.</summary>
    public string Transport { get; init; } = "plain TCP";
    /// <summary>The control socket, as the log's hints name it ("vmm ctl --socket PATH failover").</summary>
    public string ControlSocketForHints { get; init; } = "API";
}
