using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.State;
using Vmm.Vm;

namespace Vmm.Replication;

/// <summary>The primary's end of one replication connection to a standby, frame by frame: the Hello and the standby's
/// Ready (which says how long it waits before it fails over, and how long its fencing may take), the first copy's
/// pass ends, each epoch's commit, heartbeats, the handover's echo, and the Abort that tells it replication ends on
/// purpose. Every answer it reads counts as the standby heard from (<see cref="LastHeardTicks"/>); an Error from the
/// standby is a <see cref="StandbyGaveUpException"/>: it will not resume the VM.</summary>
internal sealed class StandbyLink : IDisposable
{
    /// <summary>How long a standby has to answer an Abort (it discards its copy, then says so).</summary>
    private static readonly TimeSpan AbortAnswerTimeout = TimeSpan.FromSeconds(1);
    /// <summary>How long a standby has to answer a Handover (it only checks that nothing is kept aside, then says so).</summary>
    private static readonly TimeSpan HandoverAnswerTimeout = TimeSpan.FromSeconds(5);

    private readonly OutgoingConnections _connection;
    private readonly MigrationTls? _tls;
    private MigrationChannel? _channel;
    private byte[] _buffer = new byte[4096];
    private long _lastHeardTicks;

    private StandbyLink(OutgoingConnections connection, MigrationTls? tls)
    {
        _connection = connection;
        _tls = tls;
    }

    /// <summary>Connects to the standby (a <see cref="MigrationException"/> when nothing listens there).</summary>
    public static StandbyLink Connect(ReplicationOptions options, TimeSpan ioTimeout)
    {
        MigrationSource.TryParseEndpoint(options.Standby, out string host, out int port);
        var tls = options.TlsDirectory is { } directory ? LoadTls(directory) : null;
        try
        {
            return new StandbyLink(new OutgoingConnections(host, port, options.Standby, ioTimeout, tls, "vmm standby --listen"), tls);
        }
        catch
        {
            tls?.Dispose();
            throw;
        }
    }

    private static MigrationTls LoadTls(string directory)
    {
        try
        {
            return MigrationTls.Load(directory);
        }
        catch (ConfigurationException e)
        {
            throw new ReplicationException(e.Message, e);
        }
    }

    public Socket Socket => _connection.MainSocket;
    /// <summary>The stream, once <see cref="Hello"/> set it up (the first copy's pages go straight onto it).</summary>
    public MigrationChannel Channel => _channel ?? throw new InvalidOperationException("the link is not open");

    /// <summary>How long the standby waits for this primary before it fails over (from its Ready).</summary>
    public TimeSpan FailoverTimeout { get; private set; }
    /// <summary>The longest its fence command may run (zero: it has none, and resumes only on an operator's word).</summary>
    public TimeSpan FenceTimeout { get; private set; }
    /// <summary>When the standby last answered (ticks of <see cref="Stopwatch"/>).</summary>
    public long LastHeardTicks => Interlocked.Read(ref _lastHeardTicks);
    public TimeSpan SinceHeard => Stopwatch.GetElapsedTime(LastHeardTicks);

    /// <summary>Ends every send and read under way (the VM stopped during a long copy).</summary>
    public void CloseAll() => _connection.CloseAll();

    /// <summary>Sets up the stream (TLS where there is) and offers <paramref name="machine"/>: returns once the standby
    /// took it (Ready), or throws why not.</summary>
    public void Hello(Machine machine, Logger log)
    {
        _channel = _connection.OpenMain(log);
        var description = MachineDescription.Of(machine.Config) with { VcpuCpuid = machine.VcpuCpuid };
        var hello = new MigrationHello(machine.Config.Name, description, machine.Disks.Select(d => d.CapacityBytes).ToArray(), Replication: true);
        Channel.Send(MigrationFrameType.Hello, hello.ToBytes());
        Channel.Flush();
        var (type, payload) = Channel.Receive(ref _buffer);
        if (type == MigrationFrameType.Error) throw new StandbyGaveUpException($"the standby refused the VM: {Encoding.UTF8.GetString(payload.Span)}");
        if (type != MigrationFrameType.Ready || payload.Length != 8) throw new ReplicationException($"the standby answered the Hello with {type}, not Ready: is it a 'vmm standby'?");
        int failoverMs = BinaryPrimitives.ReadInt32LittleEndian(payload.Span);
        int fenceMs = BinaryPrimitives.ReadInt32LittleEndian(payload.Span[4..]);
        if (failoverMs <= 0 || fenceMs < 0) throw new ReplicationException($"the standby gave a failover timeout of {failoverMs} ms and a fence timeout of {fenceMs} ms");
        FailoverTimeout = TimeSpan.FromMilliseconds(failoverMs);
        FenceTimeout = TimeSpan.FromMilliseconds(fenceMs);
        Heard();
    }

    /// <summary>From the epochs on a silent standby is a lost one: it fails over after its own timeout, and a read or
    /// write waits twice that.</summary>
    public void TimeOutAsTheStandbyDoes() =>
        Socket.SendTimeout = Socket.ReceiveTimeout = (int)Math.Max(1000, 2 * FailoverTimeout.TotalMilliseconds);

    /// <summary>Ends pass <paramref name="pass"/> of the first copy; returns once the standby applied it.</summary>
    public void EndPass(int pass)
    {
        Channel.Send(MigrationFrameType.PassEnd, BitConverter.GetBytes(pass));
        Channel.Flush();
        OutgoingConnections.ExpectFrame(Channel, MigrationFrameType.PassDone, pass == 1 ? "the standby did not take the first full copy" : $"the standby did not take catch-up pass {pass}");
        Heard();
    }

    /// <summary>Sends an epoch (its staged frames, then its state) and returns once the standby committed it.</summary>
    public void Commit(EpochStaging staging, byte[] state, long epoch)
    {
        staging.SendAll(Channel);
        Channel.Send(MigrationFrameType.State, state);
        Channel.Send(MigrationFrameType.EpochEnd, BitConverter.GetBytes(epoch));
        Channel.Flush();
        ExpectEpochAnswer(MigrationFrameType.EpochCommitted, epoch);
    }

    /// <summary>Makes the committed <paramref name="epoch"/> the VM's last; returns once the standby echoed it, having
    /// told it so (the VM stops here now). That last word may be lost: the standby then fences before it resumes.</summary>
    public void HandOver(long epoch)
    {
        Channel.Send(MigrationFrameType.Handover, BitConverter.GetBytes(epoch));
        Channel.Flush();
        Socket.ReceiveTimeout = (int)HandoverAnswerTimeout.TotalMilliseconds;
        ExpectEpochAnswer(MigrationFrameType.Handover, epoch);
        try
        {
            Channel.Send(MigrationFrameType.Handover, BitConverter.GetBytes(epoch));
            Channel.Flush();
        }
        catch (MigrationException)
        {
            // Past the echo the VM is the standby's: it stops here either way, and the standby, not told, fences first.
        }
    }

    public void Heartbeat()
    {
        Channel.Send(MigrationFrameType.Heartbeat, []);
        Channel.Flush();
        var (type, payload) = Channel.Receive(ref _buffer);
        if (type == MigrationFrameType.Error) throw new StandbyGaveUpException($"the standby gave up: {Encoding.UTF8.GetString(payload.Span)}");
        if (type != MigrationFrameType.Heartbeat) throw new ReplicationException($"the standby answered a heartbeat with {type}");
        Heard();
    }

    /// <summary>Reads the standby's answer about <paramref name="epoch"/>: its commit, or the echo of a handover.</summary>
    private void ExpectEpochAnswer(MigrationFrameType expected, long epoch)
    {
        var (type, payload) = Channel.Receive(ref _buffer);
        if (type == MigrationFrameType.Error) throw new StandbyGaveUpException($"the standby gave up: {Encoding.UTF8.GetString(payload.Span)}");
        if (type != expected || payload.Length != 8 || BinaryPrimitives.ReadInt64LittleEndian(payload.Span) != epoch)
            throw new ReplicationException($"the standby answered epoch {epoch} with {type}, not {expected}");
        Heard();
    }

    private void Heard() => Interlocked.Exchange(ref _lastHeardTicks, Stopwatch.GetTimestamp());

    /// <summary>Tells the standby replication ends on purpose, so it discards its copy instead of failing over. Only an
    /// answer counts: an Abort written into a link that went silent never arrives, and that standby will fence this
    /// host and resume the VM.</summary>
    public bool TryAbort(string why)
    {
        if (_channel is null || !Socket.Connected) return false;
        try
        {
            Socket.SendTimeout = Socket.ReceiveTimeout = (int)AbortAnswerTimeout.TotalMilliseconds;
            _channel.SendText(MigrationFrameType.Abort, why);
            _channel.Flush();
            // An epoch's commit (or a late answer to a handover) may still be on its way; the answer to the Abort comes after it.
            for (int frames = 0; frames < 4; frames++)
            {
                var (type, _) = _channel.Receive(ref _buffer);
                if (type is MigrationFrameType.Heartbeat or MigrationFrameType.Error) return true;
                if (type is not (MigrationFrameType.EpochCommitted or MigrationFrameType.Handover)) return false;
            }
            return false;
        }
        catch (Exception e) when (e is MigrationException or SocketException or ObjectDisposedException or IOException)
        {
            return false;
        }
    }

    /// <summary>Whether a standby at the address admits this VM now: a Hello, and on its Ready an Abort at once (it
    /// discards the nothing it took).</summary>
    public static bool Knock(ReplicationOptions options, Machine machine, TimeSpan timeout, Logger log)
    {
        StandbyLink? link = null;
        try
        {
            link = Connect(options, timeout);
            link.Hello(machine, log);
            link.TryAbort("the primary knocked to learn whether its lost standby is gone; replication starts over");
            return true;
        }
        catch (Exception e) when (e is VmmException or IOException or SocketException or ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            link?.Dispose();
        }
    }

    public void Dispose()
    {
        _connection.Dispose();
        _tls?.Dispose();
    }
}

/// <summary>The standby said it ends replication (it refused or failed): it will not resume the VM.</summary>
internal sealed class StandbyGaveUpException(string message) : VmmException(message);
