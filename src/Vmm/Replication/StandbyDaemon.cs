using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Vm;

namespace Vmm.Replication;

/// <summary><c>vmm standby</c>: holds the last committed epoch of one replicated VM and resumes it when the primary
/// dies. Each connection is a session of its own (<see cref="Session"/>) until its Hello is admitted; only an admitted
/// session becomes the standby's replication, and only its end changes what the standby holds: a port scan, a health
/// check or a stalled handshake leaves a held replica, its primary's address and the phase as they were. One
/// replication at a time (another is told the standby is busy). While a lost primary's replica is held, only that VM's
/// primary is admitted (it is alive, so what was held goes); with a bound name, only that VM ever is. When the stream
/// breaks or goes silent after an epoch committed, the standby waits until the primary has been silent for the failover
/// timeout, runs the fence command, and only when that succeeds resumes the VM from the last committed epoch; without a
/// fence command it waits for <see cref="Failover"/>, and a fence that fails leaves the VM not running until an operator
/// who made sure the primary is dead says so with <c>vmm ctl failover</c>. A standby that itself went silent too long
/// (stopped, starved) does not fence at all when it wakes: see <see cref="TryFailover"/>.
/// A primary that connects again meanwhile is evidently alive: its new stream replaces what was held. A stream that
/// ends on purpose (the primary stopped replicating) or that this standby refuses leaves nothing to resume. Once
/// resumed the VM runs in this process, and the exit code is the VM's.
/// A VM the primary handed over (<c>vmm ctl replicate --handover</c>) waits in phase "handed-over" and is resumed on
/// <see cref="Failover"/>, with or without a fence command: the primary confirmed it stopped, so there is nothing to
/// fence, and a planned move is the operator's or cluster manager's to finish when they choose.
/// The control sockets belong to the layer above: <paramref name="startOwnControl"/> serves the standby's (status,
/// failover), and once the VM is resumed <paramref name="startVmControl"/> serves the VM's in its place.</summary>
public sealed class StandbyDaemon(StandbySettings settings, TcpListener listener, MigrationTls? tls, Logger log,
    Func<StandbyDaemon, IDisposable>? startOwnControl = null, Func<Machine, IDisposable>? startVmControl = null)
{
    /// <summary>Connections not yet past their Hello: bounded, so that no peer holds the standby's place by connecting,
    /// and connecting faster only gets its connections refused (refusals are bounded too).</summary>
    public const int MaxAwaitingHello = 8;

    private readonly IncomingConnections _connections = new(listener, log, "standby: ", "the standby is busy");
    private readonly object _lock = new();
    private readonly ManualResetEventSlim _finished = new();
    /// <summary>What the standby is doing, for status and logs (guarded by <see cref="_lock"/>).</summary>
    private string _phase = "waiting";
    /// <summary>The admitted stream, replicating into this standby.</summary>
    private Session? _replicating;
    /// <summary>The checkpoint of a primary that was lost, not yet resumed (fencing failed, or none was configured), and
    /// where that primary connected from (what the fence command is told).</summary>
    private StandbyCheckpoint? _orphan;
    private string? _orphanPrimary;
    /// <summary>The orphan was handed over by its primary, which stopped it: it is resumed without fencing.</summary>
    private bool _handedOver;
    private Machine? _machine;
    private IDisposable? _control;
    /// <summary>The standby's control socket being replaced by the resumed VM's.</summary>
    private Task _controlSwap = Task.CompletedTask;
    private Stream? _serialLog;
    private int _exitCode = ExitCodes.GuestFinished;
    private bool _fencing;

    /// <summary>One incoming connection: where it came from, and what it received once admitted.</summary>
    private sealed class Session(string source)
    {
        public string Source => source;
        public StandbyReceiver? Receiver { get; set; }
    }

    public System.Net.EndPoint? LocalEndpoint => listener.LocalEndpoint;

    /// <summary>Stands by until <see cref="Stop"/>, or until the VM resumed here ends; returns the exit code.</summary>
    public int Run()
    {
        if (startOwnControl is not null) _control = startOwnControl(this);
        log.Info($"standby: waiting for a primary on {listener.LocalEndpoint} ({settings.Transport}), failover after {settings.FailoverTimeout.TotalMilliseconds:0} ms of silence{(settings.FenceCommand is null ? ", on 'vmm ctl failover' (no --fence-command)" : "")}");
        new Thread(() => _connections.AcceptUntilStopped(MaxAwaitingHello, Busy, Receive, "standby-receive")) { Name = "standby-accept", IsBackground = true }.Start();
        _finished.Wait();
        _connections.Stop();
        _controlSwap.Wait();
        lock (_lock)
        {
            _control?.Dispose();
            _machine?.Dispose();
            _serialLog?.Dispose();
            if (_orphan is { } orphan)
            {
                // No primary runs this VM any more: these disks may be its only current copy. Its RAM cannot outlive us.
                orphan.ReleaseKeepingDisks();
                if (orphan.Epoch > 0)
                    log.Warning($"standby: stopping without resuming VM {orphan.Name}: its disk images stay in {settings.DiskDir} as of epoch " +
                                $"{orphan.Epoch} (its memory is lost; boot it from them, or delete them, by hand)");
            }
            _replicating?.Receiver?.Checkpoint?.Dispose();
        }
        return _exitCode;
    }

    /// <summary>Stops the VM resumed here, or the standing by (a signal).</summary>
    public void Stop(VmStop why)
    {
        lock (_lock)
        {
            _exitCode = why.ExitCode;
            if (_machine is { } machine) machine.RequestStop(why);
            else _finished.Set();
        }
    }

    private string? Busy()
    {
        lock (_lock) return _machine is not null ? "the VM runs here already" : null;
    }

    /// <summary>Admits a session whose Hello checked out, making it the standby's replication, or refuses it (throws):
    /// the VM runs here, another replicates, a fence is under way, another VM's replica is held for its lost primary,
    /// or the standby is bound to another VM. The held replica's own primary is admitted: it is alive, so the replica goes.</summary>
    private void Admit(Session session, MigrationHello hello)
    {
        lock (_lock)
        {
            string? busy = _machine is not null ? "the VM runs here already"
                : _replicating is { } other ? $"it takes a replica from {other.Source} already"
                : _fencing ? "it is fencing a lost primary"
                : _orphan is { } held && _handedOver ? $"it holds VM {held.Name}, handed over by its primary: 'vmm ctl failover' resumes it here"
                : _orphan is { } lost && lost.Name != hello.Name ? $"it holds the replica of VM {lost.Name} for its lost primary; only that VM's primary may connect until an operator fails it over or stops this standby"
                : null;
            if (busy is not null) throw new MigrationException($"the standby is busy: {busy}");
            if (settings.Name is { } bound && hello.Name != bound)
                throw new MigrationException($"this standby holds VM {bound} only (--name), and the primary replicates VM {hello.Name}");
            if (_orphan is { } old)
            {
                log.Info($"standby: the primary of VM {old.Name} connected again from {session.Source}: it is alive, so the replica at epoch {old.Epoch} is discarded");
                old.Dispose();
                _orphan = null;
                _orphanPrimary = null;
            }
            _replicating = session;
            _phase = "replicating";
        }
    }

    /// <summary>One replication stream, from the Hello to its end; a failure boundary like a migration.</summary>
    private void Receive(IncomingConnection connection)
    {
        var socket = connection.Socket;
        var session = new Session(connection.Source);
        StandbyOutcome outcome;
        Stream? stream = null;
        try
        {
            socket.NoDelay = true;
            socket.ReceiveBufferSize = 4 << 20;
            // A silent primary is a dead one: a read that waits this long ends the stream.
            socket.ReceiveTimeout = socket.SendTimeout = (int)settings.FailoverTimeout.TotalMilliseconds;
            stream = IncomingMigrationStream.Open(socket, tls);
            if (stream is SslStream tlsSession) log.Info($"standby: mutual TLS ({tlsSession.SslProtocol}) with {tlsSession.RemoteCertificate?.Subject}");
            var receiver = session.Receiver = new StandbyReceiver(new MigrationChannel(stream), log, Path.GetFullPath(settings.DiskDir), settings.FailoverTimeout,
                settings.FenceTimeout);
            outcome = receiver.Run(hello =>
            {
                connection.FirstFrameRead();
                MachineBuilder.CheckCpuid(hello.Description.ToConfig(HostSettings(Stream.Null, hello.Name)));
                Admit(session, hello);
            });
        }
        catch (Exception e)
        {
            outcome = new StandbyOutcome(null, connection.Describe(e));
        }
        finally
        {
            stream?.Dispose();
            connection.Close();
        }
        var sinceHeard = session.Receiver?.SinceHeard ?? TimeSpan.Zero;
        lock (_lock)
        {
            // A session never admitted changes nothing the standby holds.
            if (_replicating != session)
            {
                log.Info($"standby: a connection from {session.Source} ended before it was admitted: {outcome.Reason}");
                return;
            }
            _replicating = null;
            _orphan = outcome.Checkpoint;
            _orphanPrimary = outcome.Checkpoint is null ? null : session.Source;
            _handedOver = outcome.HandedOver;
            _phase = _orphan is null ? "waiting" : outcome.HandedOver ? "handed-over" : "primary-lost";
        }
        if (outcome.Checkpoint is not { } checkpoint)
        {
            log.Info($"standby: replication from {session.Source} ended: {outcome.Reason}; waiting for a primary");
            return;
        }
        if (outcome.HandedOver)
        {
            log.Info($"standby: {outcome.Reason}; the primary stopped it. VM {checkpoint.Name} resumes here on: vmm ctl --socket {settings.ControlSocketForHints} failover");
            return;
        }
        log.Warning($"standby: {outcome.Reason}; the replica of {checkpoint.Name} holds epoch {checkpoint.Epoch}, committed {checkpoint.Age.TotalMilliseconds:F0} ms ago");
        // Silent for the whole timeout, counted from its last frame, not from when the connection broke.
        var wait = settings.FailoverTimeout - sinceHeard;
        if (wait > TimeSpan.Zero) Thread.Sleep(wait);
        if (settings.FenceCommand is null)
        {
            log.Warning("standby: no --fence-command: the VM is resumed here on 'vmm ctl failover', once the primary is known to be dead");
            return;
        }
        TryFailover(checkpoint, manual: false, session.Receiver);
    }

    /// <summary>The operator's word that the primary is dead (as Pacemaker's stonith_admin --confirm), or a handed-over
    /// VM's planned resumption: resumes the held replica at once. Null once it runs, otherwise why it was not resumed.</summary>
    public string? Failover()
    {
        StandbyCheckpoint? orphan;
        lock (_lock)
        {
            if (_replicating is { Receiver: { } receiver } replicating && receiver.SinceHeard < settings.FailoverTimeout)
                return $"the primary {replicating.Source} was heard from {receiver.SinceHeard.TotalMilliseconds:F0} ms ago: it is alive, so the VM is not resumed here";
            orphan = _orphan;
        }
        if (orphan is null) return "there is no replica waiting for a failover here";
        return TryFailover(orphan, manual: true, lostStream: null);
    }

    /// <summary>Resumes the VM: on the primary's silence only once the fence command succeeds; on the operator's
    /// word (<paramref name="manual"/>) at once. The automatic way fences only while the primary cannot yet have let out
    /// output this replica would repeat: a primary that lost this standby holds it for twice the failover timeout
    /// plus the fence timeout after it last heard from it (<see cref="LostStandbyHold"/>), and it last heard no earlier
    /// than this standby's last answer it surely had (<see cref="StandbyReceiver.SinceAnswerHeard"/>). A fence started
    /// later than two failover timeouts after that answer may end after the primary released that output (a standby
    /// that was itself stopped or starved and woke to a primary long silent, or an epoch that took longer than a failover
    /// timeout to arrive): then the replica is held for the operator instead (phase "stale"), and the primary, if it is
    /// alive, runs on.</summary>
    private string? TryFailover(StandbyCheckpoint checkpoint, bool manual, StandbyReceiver? lostStream)
    {
        bool handedOver;
        string? primary;
        lock (_lock)
        {
            if (_orphan != checkpoint || _fencing || _machine is not null) return "the replica is no longer waiting for a failover";
            handedOver = _handedOver;
            primary = _orphanPrimary;
            _fencing = true;
            _phase = "fencing";
        }
        var failingOver = Stopwatch.StartNew();
        try
        {
            double fenceMs = 0;
            // The operator's word is how a VM whose fencing failed gets resumed, so the fence that failed is not asked again.
            if (!manual)
            {
                if (settings.FenceCommand is not { } fence) return "no fence command";
                if (lostStream is { SinceAnswerHeard: var answered } && answered >= 2 * settings.FailoverTimeout)
                {
                    log.Error($"standby: the primary last surely heard from this standby {answered.TotalMilliseconds:F0} ms ago (was the standby stopped or starved?): " +
                              $"a primary that lived on may have let out output this replica would print again, so it is not fenced, and the VM is NOT " +
                              $"resumed here. If the primary is dead: vmm ctl --socket {settings.ControlSocketForHints} failover");
                    lock (_lock) _phase = "stale";
                    return "the replica is stale: this standby was silent too long to fence the primary safely";
                }
                var fencing = Stopwatch.StartNew();
                if (new FenceCommand(fence, settings.FenceTimeout, log).Run(checkpoint.Name, checkpoint.Epoch, primary) is { } refusal)
                {
                    log.Error($"standby: fencing the primary failed ({refusal}); the VM is NOT resumed here (it may still run there). After making sure the primary is dead: vmm ctl --socket {settings.ControlSocketForHints} failover");
                    lock (_lock) _phase = "fence-failed";
                    return $"fencing the primary failed: {refusal}";
                }
                fenceMs = fencing.Elapsed.TotalMilliseconds;
            }
            var age = checkpoint.Age;
            string name = checkpoint.Name;
            long epoch = checkpoint.Epoch;
            _serialLog = settings.SerialLog is null ? null : SerialLogFile.Open(VmName.Expand(settings.SerialLog, name));
            var machine = checkpoint.Resume(HostSettings(_serialLog ?? Console.OpenStandardOutput(), name), log);
            lock (_lock)
            {
                _orphan = null;
                _machine = machine;
                _phase = "running";
            }
            // This may be the standby socket's own failover request, which its Dispose waits for: swap it on another thread.
            if (startVmControl is not null) _controlSwap = Task.Run(() => SwapControlSocket(machine));
            var run = Task.Factory.StartNew(machine.Run, TaskCreationOptions.LongRunning);
            string how = !manual ? $"fencing {fenceMs:F1} ms" : handedOver ? "handed over by the primary" : "asked for by 'vmm ctl failover', not fenced here";
            log.Warning($"standby: failover: VM {name} resumed from epoch {epoch}, committed {age.TotalMilliseconds:F0} ms before, in {failingOver.Elapsed.TotalMilliseconds:F1} ms ({how})");
            run.ContinueWith(t =>
            {
                VmStop stop = t.Result;
                log.Info($"standby: VM {name} stopped: {stop.Description} (exit code {stop.ExitCode})");
                lock (_lock) if (_exitCode == ExitCodes.GuestFinished) _exitCode = stop.ExitCode;
                _finished.Set();
            });
            return null;
        }
        catch (Exception e)
        {
            string why = e is VmmException ? e.Message : $"internal error in vmm: {e}";
            log.Error($"standby: resuming the VM failed: {why}");
            lock (_lock) _phase = "failover-failed";
            return $"resuming the VM failed: {why}";
        }
        finally
        {
            lock (_lock) _fencing = false;
        }
    }

    private void SwapControlSocket(Machine machine)
    {
        _control?.Dispose();
        try
        {
            _control = startVmControl!(machine);
        }
        catch (ConfigurationException e)
        {
            log.Error($"standby: the resumed VM runs without a control socket: {e.Message}");
        }
    }

    private MachineConfig HostSettings(Stream serial, string name) => settings.Host with { SerialOutput = serial, Name = name };

    /// <summary>What the standby is doing now.</summary>
    public StandbyStatus Status()
    {
        lock (_lock)
        {
            var receiver = _replicating?.Receiver;
            var checkpoint = _orphan ?? receiver?.Checkpoint;
            return new StandbyStatus(_phase, _replicating?.Source ?? _orphanPrimary, settings.Name, checkpoint?.Name, checkpoint?.Epoch,
                checkpoint is null ? null : Math.Round(checkpoint.Age.TotalMilliseconds, 1),
                receiver is null ? null : Math.Round(receiver.SinceHeard.TotalMilliseconds, 1));
        }
    }
}
