using Vmm.Diagnostics;

namespace Vmm.Migration;

/// <summary>A migration whose Commit went out and whose Resumed never came back: the target may run the VM, so the
/// source keeps its copy paused until the target says what became of it (<see cref="Ask"/>) or an operator says the
/// target does not run it.</summary>
public sealed record MigrationDoubt(string Target, MigrationLocate Migration, string? TlsDirectory, string Reason)
{
    public MigrationOutcome Ask(Logger log, out string why) => Migration.Ask(Target, TlsDirectory, TimeSpan.FromSeconds(10), log, out why);
}
