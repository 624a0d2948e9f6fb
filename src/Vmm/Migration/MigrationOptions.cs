namespace Vmm.Migration;

/// <summary>How a source migrates: where to, the downtime the guest may see, and what to do when the
/// copy passes do not get there.</summary>
public sealed record MigrationOptions
{
    public required string Target { get; init; }
    public int DowntimeMs { get; init; } = 300;
    /// <summary>0: no limit.</summary>
    public int TimeoutS { get; init; }
    public int MaxPasses { get; init; } = 30;
    /// <summary>At the pass or time limit, stop and copy anyway instead of failing.</summary>
    public bool Force { get; init; }
    public bool AutoConverge { get; init; }
    /// <summary>Copy the disk images in the stream (storage migration) instead of relying on shared storage.</summary>
    public bool CopyDisks { get; init; }
    /// <summary>How long the source waits for the target to say the VM runs there before resuming it here.</summary>
    public TimeSpan ConfirmTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How long one write or read on the connection may block before the peer counts as dead.</summary>
    public TimeSpan IoTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Mutual TLS with the files of this directory (see <see cref="MigrationTls"/>); null: plain TCP.</summary>
    public string? TlsDirectory { get; init; }
    /// <summary>How many TCP connections carry the passes (1 to <see cref="MigrationHello.MaxConnections"/>): each
    /// has its own sending thread here and receiving thread at the target, so checksums, TLS and copies spread over cores.</summary>
    public int Connections { get; init; } = 1;
}
