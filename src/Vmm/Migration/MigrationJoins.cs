using System.Collections.Concurrent;

namespace Vmm.Migration;

/// <summary>The incoming migrations of one listener that use several connections, by token: a connection whose
/// first frame is a Join is handed here to the migration it names. An entry lives while its migration is received.</summary>
public sealed class MigrationJoins
{
    private readonly ConcurrentDictionary<UInt128, JoiningConnections> _byToken = new();

    /// <summary>How many migrations over several connections are being received.</summary>
    public int Count => _byToken.Count;

    internal JoiningConnections Open(int connections, IDisposable main, Func<MigrationChannel, int, IncomingPassReader> readerFor)
    {
        while (true)
        {
            var joining = new JoiningConnections(MigrationJoin.NewToken(), connections, main, readerFor);
            if (_byToken.TryAdd(joining.Token, joining)) return joining;
        }
    }

    internal void Close(JoiningConnections joining) => _byToken.TryRemove(joining.Token, out _);

    internal JoiningConnections Find(MigrationJoin join) =>
        _byToken.TryGetValue(join.Token, out var joining) ? joining
            : throw new MigrationException($"a Join as connection {join.Index} with a token no migration here has (unknown, or that migration has ended)");
}
