namespace Vmm.Replication;

/// <summary>Where a VM is replicated to and how often its epochs end.</summary>
public sealed record ReplicationOptions
{
    /// <summary>HOST:PORT of the <c>vmm standby</c>.</summary>
    public required string Standby { get; init; }
    /// <summary>How long each epoch runs before its checkpoint is taken; its output waits about this long.</summary>
    public int IntervalMs { get; init; } = 100;
    /// <summary>Mutual TLS with the files of this directory; null: plain TCP.</summary>
    public string? TlsDirectory { get; init; }
    /// <summary>How long one write or read may block during the first full copy before the standby counts as dead.</summary>
    public TimeSpan IoTimeout { get; init; } = TimeSpan.FromSeconds(30);
}
