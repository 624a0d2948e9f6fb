namespace Vmm.Migration;

/// <summary>The further connections of one incoming migration whose Hello asked for several. Each joins with the
/// migration's token while the source opens them, all before the first pass ends; each then carries its share of
/// every pass (<see cref="IncomingPassReader"/>) on the thread that accepted it, and all end with the migration.
/// A failure on any connection fails the migration: every other connection is closed, which ends each read that
/// blocks on one, here and at the source.</summary>
public sealed class JoiningConnections
{
    private readonly object _gate = new();
    /// <summary>What closes each connection (0: the one that sent the Hello); null until it joins.</summary>
    private readonly IDisposable?[] _connections;
    private readonly Func<MigrationChannel, int, IncomingPassReader> _readerFor;
    /// <summary>The joined connections still served, plus one until <see cref="End"/>.</summary>
    private readonly CountdownEvent _serving = new(1);
    private bool _joiningClosed, _ended;
    private Exception? _failure;

    internal JoiningConnections(UInt128 token, int connections, IDisposable main, Func<MigrationChannel, int, IncomingPassReader> readerFor)
    {
        Token = token;
        _connections = new IDisposable?[connections];
        _connections[0] = main;
        _readerFor = readerFor;
    }

    public UInt128 Token { get; }

    /// <summary>The failure of a further connection that failed the migration, if one did.</summary>
    public Exception? Failure
    {
        get { lock (_gate) return _failure; }
    }

    /// <summary>Takes a connection that joined with this migration's token and carries its frames on the calling
    /// thread until the migration ends (returns) or fails (throws; the migration fails with it).</summary>
    internal void Serve(MigrationJoin join, MigrationChannel channel, IDisposable connection)
    {
        lock (_gate)
        {
            if (_joiningClosed) throw new MigrationException($"connection {join.Index} joined too late: the migration it names takes no more connections");
            if (join.Index < 1 || join.Index >= _connections.Length || _connections[join.Index] is not null)
                throw new MigrationException($"migration stream: a Join as connection {join.Index} (the migration has connections 1 to {_connections.Length - 1}, each joining once)");
            _connections[join.Index] = connection;
            _serving.AddCount();
        }
        try
        {
            channel.Send(MigrationFrameType.Ready, []);
            channel.Flush();
            var reader = _readerFor(channel, join.Index);
            while (true)
            {
                var frame = channel.ReceiveHeader();
                if (!reader.TryTake(frame)) throw new MigrationException($"migration stream: a {frame.Type} frame on connection {join.Index}, which carries passes only");
            }
        }
        catch (Exception e)
        {
            lock (_gate)
                if (_ended) return; // closed by the end of the migration: this connection's work is done
            Fail(e, join.Index);
            throw;
        }
        finally
        {
            _serving.Signal();
        }
    }

    /// <summary>Fails the migration: closes every connection but the failing one (its thread tells the source why).</summary>
    internal void Fail(Exception failure, int failing)
    {
        IDisposable?[] others;
        lock (_gate)
        {
            if (_ended) return;
            _failure ??= failure;
            _joiningClosed = true;
            others = _connections.Where((_, i) => i != failing).ToArray();
        }
        foreach (var connection in others) connection?.Dispose();
    }

    /// <summary>The first pass ended: the source opened every connection before it began, so one missing now never comes.</summary>
    internal void StopJoining()
    {
        lock (_gate)
        {
            _joiningClosed = true;
            int joined = _connections.Count(c => c is not null);
            if (joined < _connections.Length)
                throw new MigrationException($"only {joined} of the {_connections.Length} connections the Hello asked for joined before the first pass ended");
        }
    }

    /// <summary>The migration is over, received or failed: closes the further connections and returns once no
    /// thread serves one any more.</summary>
    internal void End()
    {
        IDisposable?[] extra;
        lock (_gate)
        {
            if (_ended) return;
            _ended = _joiningClosed = true;
            extra = _connections[1..];
        }
        foreach (var connection in extra) connection?.Dispose();
        _serving.Signal();
        _serving.Wait();
        _serving.Dispose();
    }
}
