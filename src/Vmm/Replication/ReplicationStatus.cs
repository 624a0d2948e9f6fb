namespace Vmm.Replication;

/// <summary>What <c>vmm ctl status</c> shows of a VM's replication.</summary>
public sealed record ReplicationStatus
{
    /// <summary>connecting, copying (the first full copy), protected (epochs commit), losing (the standby was lost and
    /// may still take over: the guest's output is held for <see cref="HoldRemainingMs"/> more), handed-over (the VM's
    /// last epoch is the standby's, and the VM stops here), unprotected (the standby was lost or replication was
    /// stopped; see <see cref="Reason"/>).</summary>
    public required string State { get; init; }
    public required string Standby { get; init; }
    public int IntervalMs { get; init; }
    /// <summary>The last epoch the standby committed (0: none yet).</summary>
    public long Epoch { get; init; }
    /// <summary>How long the guest was paused to take the last epoch's checkpoint.</summary>
    public double PauseMs { get; init; }
    /// <summary>From the end of the last epoch's pause to the standby's commit: how long its output was held beyond the epoch.</summary>
    public double CommitLatencyMs { get; init; }
    public long PagesLastEpoch { get; init; }
    public long DiskBytesLastEpoch { get; init; }
    /// <summary>The guest's output (console bytes, network frames) waiting for its epoch's commit.</summary>
    public long OutputHeldBytes { get; init; }
    public long OutputDroppedBytes { get; init; }
    /// <summary>How long the guest's released output was held, on average and at most: the latency replication adds to it.</summary>
    public double OutputDelayAverageMs { get; init; }
    public double OutputDelayMaxMs { get; init; }
    /// <summary>How far the standby's checkpoint is behind the running VM: the time since the last commit's checkpoint was taken.</summary>
    public double LagMs { get; init; }
    public string? Reason { get; init; }
    /// <summary>While losing: how much longer the guest's output stays held.</summary>
    public double HoldRemainingMs { get; init; }
}
