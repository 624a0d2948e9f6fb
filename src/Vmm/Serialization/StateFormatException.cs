namespace Vmm.Serialization;

/// <summary>Saved VM state (a snapshot file or a migration stream) that cannot be used: truncated,
/// corrupted, from another format version, or describing a VM this host cannot build.</summary>
public sealed class StateFormatException(string message) : VmmException(message);
