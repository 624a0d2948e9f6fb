using System.Buffers.Binary;
using System.Text;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Serialization;
using Vmm.State;

namespace Vmm.Migration;

/// <summary>The target side of one migration: reads the stream, builds the machine it describes, fills its
/// RAM (and, in a storage migration, its disk images: <see cref="IncomingDiskImages"/>) and restores its state.
/// Everything read is checked (magic, version, frame lengths and checksums, page addresses inside RAM, disk
/// ranges inside their images, frame order); on any failure (a bug included) the half-built machine and any
/// partial image are discarded, the source is told why, and a <see cref="MigrationException"/> says it to the
/// caller. A migration may come over several connections: the one with the Hello, and others that join it
/// (<see cref="MigrationJoins"/>, <see cref="JoiningConnections"/>); each is received on its own thread.
/// <para>The commit: once the state is restored the target answers Prepared and waits; only the source's Commit lets
/// the VM run here (<see cref="AwaitCommit"/>), and from then on it is this target's, whether or not the source hears
/// Resumed. Until then any failure discards it, and the source resumes its own. Each migration's outcome is recorded
/// (<see cref="MigrationOutcomes"/>) for a source that is left in doubt and asks (<see cref="MigrationLocate"/>).</para></summary>
public sealed class MigrationReceiver
{
    private readonly MigrationChannel _channel;
    private readonly Logger _log;
    private readonly string? _diskDirectory;
    private readonly MigrationJoins? _joins;
    private readonly IDisposable _connection;
    private readonly MigrationOutcomes? _outcomes;
    private byte[] _buffer = new byte[1 << 20];
    private MigrationHello? _hello;
    private IncomingDiskImages? _disks;

    /// <param name="diskDirectory">Where copied disk images are written; null: this target takes only VMs whose
    /// disks sit on shared storage.</param>
    /// <param name="joins">The migrations further connections may join; null: this target takes one connection per migration.</param>
    /// <param name="connection">What closes the connection under a read that blocks (its socket); null: the stream.</param>
    /// <param name="outcomes">Where this target records what became of each migration, and answers a source in doubt
    /// from; null: it keeps no record, and says so.</param>
    public MigrationReceiver(Stream stream, Logger log, string? diskDirectory = null, MigrationJoins? joins = null, IDisposable? connection = null, MigrationOutcomes? outcomes = null)
    {
        _outcomes = outcomes;
        _channel = new MigrationChannel(stream);
        _log = log;
        _diskDirectory = diskDirectory;
        _joins = joins;
        _connection = connection ?? stream;
    }

    public long BytesReceived => _channel.BytesReceived;

    /// <summary>Reads the connection's first frame. A Hello begins a migration: returns true, and
    /// <see cref="Receive{T}(Func{IncomingMachine, T})"/> goes on with it. A Join makes this connection one more of a
    /// migration under way: <paramref name="joined"/> is called once it is taken, the connection carries that
    /// migration's passes until it ends, and this returns false (or throws, failing that migration too). A Locate (a
    /// source in doubt asking what became of its migration) is answered, and this returns false.</summary>
    public bool ReadHelloOrServeJoin(Action<int>? joined = null)
    {
        try
        {
            var (type, payload) = _channel.Receive(ref _buffer);
            // A TLS source that refused this target's certificate says so in place of its Hello.
            if (type == MigrationFrameType.Abort) throw new MigrationException($"the source gave up: {Encoding.UTF8.GetString(payload.Span)}");
            if (type == MigrationFrameType.Join && _joins is not null)
            {
                var join = MigrationJoin.Read(payload.Span);
                var joining = _joins.Find(join);
                joined?.Invoke(join.Index);
                joining.Serve(join, _channel, _connection);
                return false;
            }
            if (type == MigrationFrameType.Locate)
            {
                var locate = MigrationLocate.Read(payload.ToArray());
                var outcome = _outcomes?.Of(locate.Id) ?? MigrationOutcome.Unknown;
                _log.Info($"a source asked what became of its migration of {locate.Name}: {outcome}");
                _channel.Send(MigrationFrameType.Located, [(byte)outcome]);
                _channel.Flush();
                return false;
            }
            if (type != MigrationFrameType.Hello) throw new MigrationException($"migration stream: expected a Hello frame, got {type}");
            _hello = MigrationHello.Read(payload.ToArray());
            if (_hello.Replication) throw new MigrationException("the source replicates its VM to a standby, and this is a migration target (replication goes to 'vmm standby')");
            if (_hello.Connections > 1 && _joins is null)
                throw new MigrationException($"the source asks for {_hello.Connections} connections, and this target takes one per migration");
            _outcomes?.Begin(_hello.MigrationId);
            return true;
        }
        catch (Exception e)
        {
            throw Failed(e);
        }
    }

    /// <summary>Receives a VM, built from the source's description alone (its disks, if any, on shared storage).</summary>
    public T Receive<T>(Func<MachineDescription, T> build) where T : IMigrationDestination => Receive((IncomingMachine incoming) => build(incoming.Description));

    /// <summary>Receives a VM: <paramref name="build"/> makes the destination (with zeroed RAM) from what the
    /// source said it is, or refuses it (a CPUID this host cannot offer, a disk outside the allowed directories). Returns it
    /// restored, once the source was told Prepared; the caller then waits for <see cref="AwaitCommit"/>, and only then
    /// starts it and calls <see cref="ConfirmResumed"/>.</summary>
    public T Receive<T>(Func<IncomingMachine, T> build) where T : IMigrationDestination
    {
        if (_hello is null && !ReadHelloOrServeJoin()) throw new InvalidOperationException("this connection joined another migration");
        var hello = _hello!;
        T? machine = default;
        JoiningConnections? joining = null;
        try
        {
            var description = hello.Description;
            if (hello.CopiedDiskBytes is { } diskBytes)
            {
                if (_diskDirectory is null)
                    throw new MigrationException("the source copies the VM's disk images, and this target has no directory for them (start vmm migrate-receive with --disk-dir DIR)");
                _disks = IncomingDiskImages.Create(_diskDirectory, description.Disks, diskBytes);
                description = description with { Disks = description.Disks.Select((d, i) => d with { Path = _disks.FinalPaths[i] }).ToArray() };
            }
            machine = build(new IncomingMachine(hello.Name, description, _disks?.OpenPaths));
            var memory = machine.Memory;
            var written = new WrittenPageMap(memory);
            var passes = new IncomingPassReader(_channel, 0, memory, written, _disks, _log);
            if (hello.Connections > 1)
            {
                joining = _joins!.Open(hello.Connections, _connection, (channel, index) => new IncomingPassReader(channel, index, memory, written, _disks, _log));
                _channel.Send(MigrationFrameType.Ready, MigrationJoin.TokenToBytes(joining.Token));
            }
            else
            {
                _channel.Send(MigrationFrameType.Ready, []);
            }
            _channel.Flush();
            bool firstPassEnded = false;
            while (true)
            {
                var frame = _channel.ReceiveHeader();
                if (passes.TryTake(frame))
                {
                    if (frame.Type == MigrationFrameType.PassEnd && !firstPassEnded)
                    {
                        firstPassEnded = true;
                        joining?.StopJoining();
                    }
                    continue;
                }
                var payload = _channel.ReceivePayload(frame, ref _buffer);
                switch (frame.Type)
                {
                    case MigrationFrameType.State:
                        // The source sends it once every connection acknowledged the last pass: the others have nothing more to say.
                        joining?.End();
                        if (joining?.Failure is { } failed) throw failed;
                        var restoring = System.Diagnostics.Stopwatch.StartNew();
                        var state = MachineState.FromBytes(payload.ToArray());
                        if (_disks is not null)
                        {
                            // The state names the source's image paths; the VM runs here on the copies.
                            if (!state.Description.SameAs(hello.Description))
                                throw new StateFormatException("the saved state describes a different machine than the Hello did");
                            state = state.WithDescription(description);
                            _disks.Commit();
                            _log.Debug($"migration: disk images durable at {string.Join(", ", _disks.FinalPaths)} in {restoring.Elapsed.TotalMilliseconds:F1} ms");
                        }
                        machine.Restore(state);
                        _log.Debug($"migration: state restored in {restoring.Elapsed.TotalMilliseconds:F1} ms");
                        _channel.Send(MigrationFrameType.Prepared, []);
                        _channel.Flush();
                        return machine;
                    case MigrationFrameType.Abort:
                        throw new MigrationException($"the source gave up: {Encoding.UTF8.GetString(payload.Span)}");
                    default:
                        throw new MigrationException($"migration stream: unexpected {frame.Type} frame");
                }
            }
        }
        catch (Exception e)
        {
            // A further connection that failed closed this one: its failure is the reason.
            var failure = joining?.Failure ?? e;
            joining?.Fail(failure, failing: 0);
            joining?.End();
            machine?.Dispose();
            _disks?.Dispose();
            if (_hello is { } discarded) _outcomes?.Discarded(discarded.MigrationId);
            throw Failed(failure);
        }
        finally
        {
            if (joining is not null) _joins!.Close(joining);
        }
    }

    /// <summary>Waits for the source's Commit: once it returns, the VM is this target's to run (and its copied disk
    /// images stay). Anything else (an Abort, the connection lost or silent) throws: the source resumes its own, so the
    /// caller must discard this one, and the copied images go.</summary>
    public void AwaitCommit()
    {
        var hello = _hello ?? throw new InvalidOperationException("no migration was received on this connection");
        try
        {
            var (type, payload) = _channel.Receive(ref _buffer);
            if (type == MigrationFrameType.Abort) throw new MigrationException($"the source gave up: {Encoding.UTF8.GetString(payload.Span)}");
            if (type != MigrationFrameType.Commit) throw new MigrationException($"migration stream: expected the Commit, got {type}");
            _outcomes?.Committed(hello.MigrationId);
            _disks?.Keep();
        }
        catch (Exception e)
        {
            _outcomes?.Discarded(hello.MigrationId);
            _disks?.Dispose();
            throw e as MigrationException ?? new MigrationException(e is VmmException ? e.Message : $"internal error in vmm: {e}", e);
        }
    }

    /// <summary>Tells the source the VM runs here. If that fails, the VM still runs here: the source, past its Commit,
    /// keeps its copy paused, in doubt, until it learns where the VM runs (<see cref="MigrationLocate"/>).</summary>
    public void ConfirmResumed()
    {
        try
        {
            _channel.Send(MigrationFrameType.Resumed, []);
            _channel.Flush();
        }
        finally
        {
            _disks?.Dispose();
        }
    }

    /// <summary>The first frame of a replication stream, which takes no joins (a standby's).</summary>
    internal static MigrationHello ReadHello(MigrationChannel channel, ref byte[] buffer)
    {
        var (type, payload) = channel.Receive(ref buffer);
        // A TLS source that refused this target's certificate says so in place of its Hello.
        if (type == MigrationFrameType.Abort) throw new MigrationException($"the source gave up: {Encoding.UTF8.GetString(payload.Span)}");
        if (type != MigrationFrameType.Hello) throw new MigrationException($"migration stream: expected a Hello frame, got {type}");
        return MigrationHello.Read(payload.ToArray());
    }

    /// <summary>Refuses the migration whose Hello was read (the target is busy, say): tells the source why, and
    /// returns the failure to throw.</summary>
    public MigrationException Refuse(string why) => Failed(new MigrationException(why));

    /// <summary>Tells the source why this connection failed, where it still can; returns the failure to throw.</summary>
    private MigrationException Failed(Exception e)
    {
        TryTellSource(e is VmmException ? e.Message : "internal error in vmm (see the target's log)");
        return e as MigrationException ?? new MigrationException(e is VmmException ? e.Message : $"internal error in vmm: {e}", e);
    }

    private void TryTellSource(string message)
    {
        try
        {
            _channel.SendText(MigrationFrameType.Error, message);
            _channel.Flush();
        }
        catch (MigrationException)
        {
            // The source is gone; it learns nothing more.
        }
    }
}
