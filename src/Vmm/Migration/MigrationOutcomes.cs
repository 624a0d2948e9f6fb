namespace Vmm.Migration;

/// <summary>A target's record of the migrations it has taken in, by id, so that a source left in doubt (its Commit
/// sent, no Resumed back) can ask whether the VM runs here (<see cref="MigrationLocate"/>). Bounded: the oldest
/// records go first, and a migration forgotten reads as <see cref="MigrationOutcome.Unknown"/>, which settles nothing.
/// Thread-safe: each migration is received on its own thread.</summary>
public sealed class MigrationOutcomes(int capacity = 4096)
{
    private readonly Dictionary<UInt128, MigrationOutcome> _outcomes = [];
    private readonly Queue<UInt128> _order = new();

    public void Begin(UInt128 id) => Record(id, MigrationOutcome.Undecided);

    /// <summary>Records the Commit: from here on the VM is this target's.</summary>
    public void Committed(UInt128 id) => Record(id, MigrationOutcome.Committed);

    /// <summary>Records a migration dropped before its Commit; a committed one stays committed.</summary>
    public void Discarded(UInt128 id) => Record(id, MigrationOutcome.Discarded);

    public MigrationOutcome Of(UInt128 id)
    {
        lock (_outcomes) return _outcomes.GetValueOrDefault(id, MigrationOutcome.Unknown);
    }

    private void Record(UInt128 id, MigrationOutcome outcome)
    {
        lock (_outcomes)
        {
            if (_outcomes.TryGetValue(id, out var known))
            {
                if (known == MigrationOutcome.Committed) return;
            }
            else
            {
                _order.Enqueue(id);
                if (_order.Count > capacity) _outcomes.Remove(_order.Dequeue());
            }
            _outcomes[id] = outcome;
        }
    }
}
