namespace Vmm.Migration;

/// <summary>What a target knows of one migration, by its id: the answer a source in doubt gets
/// (<see cref="MigrationFrameType.Located"/>).</summary>
public enum MigrationOutcome : byte
{
    /// <summary>The target has no record of it (it never saw it, or it restarted since): it cannot say.</summary>
    Unknown = 0,
    /// <summary>It is still coming in, before or at its commit: ask again.</summary>
    Undecided = 1,
    /// <summary>The target took the Commit: the VM ran there, and may still.</summary>
    Committed = 2,
    /// <summary>The target discarded it without a Commit: the VM never ran there.</summary>
    Discarded = 3,
}
