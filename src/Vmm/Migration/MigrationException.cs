namespace Vmm.Migration;

/// <summary>A migration that could not finish: the peer went away or misbehaved, the stream was bad, or a
/// limit was reached. Before the Commit the source VM keeps running and the target discards what it received; after
/// it, without the target's word, the source VM stays paused and <see cref="Doubt"/> says where it may run.</summary>
public sealed class MigrationException(string message, Exception? inner = null) : VmmException(message, inner)
{
    public MigrationDoubt? Doubt { get; init; }
}
