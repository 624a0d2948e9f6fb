namespace Vmm.Replication;

/// <summary>Replication to a standby failed or could not start; the VM runs on here, unprotected.</summary>
public sealed class ReplicationException(string message, Exception? inner = null) : VmmException(message, inner);
