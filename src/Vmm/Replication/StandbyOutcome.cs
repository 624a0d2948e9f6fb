namespace Vmm.Replication;

/// <summary>How a replication stream ended at the standby. <see cref="Checkpoint"/> is set only when the primary was
/// lost (its connection broke or went silent) after an epoch committed: the VM may be resumed from it, once the
/// primary is fenced. Ended on purpose (the primary stopped replicating, or this standby refused the stream), there
/// is nothing to resume. <see cref="HandedOver"/>: the primary handed the VM over on purpose (a planned move) and
/// stopped it; the checkpoint is its final epoch, to be resumed without fencing.</summary>
public sealed record StandbyOutcome(StandbyCheckpoint? Checkpoint, string Reason, bool HandedOver = false);
