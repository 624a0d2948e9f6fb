namespace Vmm.Migration;

/// <summary>A migration that could not finish: the peer went away or misbehaved, the stream was bad, or a
/// limit was reached. The source VM keeps running; the target discards what it received.</summary>
public sealed class MigrationException(string message, Exception? inner = null) : VmmException(message, inner);
