namespace Vmm.Replication;

/// <summary>What a standby is doing, as its control socket reports it: the phase (waiting, replicating, primary-lost,
/// fencing, fence-failed, stale, handed-over, running, failover-failed), the primary it replicates from or lost, and the
/// replica it holds.</summary>
public sealed record StandbyStatus(string Phase, string? Primary, string? BoundTo, string? Name, long? Epoch, double? EpochAgeMs, double? SinceHeardMs);
