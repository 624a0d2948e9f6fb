namespace Vmm.Snapshot;

/// <summary>A snapshot could not be written or read: the directory is not writable, the disk is full, the
/// files are missing. Nothing half-written is left looking complete.</summary>
public sealed class SnapshotException(string message, Exception? inner = null) : VmmException(message, inner);
