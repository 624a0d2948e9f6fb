using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Vmm.Control;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Replication;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary><c>vmm standby</c>: holds the last committed epoch of one replicated VM and resumes it when the primary
/// dies. Each connection is a session of its own (<see cref="Session"/>) until its Hello is admitted; only an admitted
/// session becomes the standby's replication, and only its end changes what the standby holds: a port scan, a health
/// check or a stalled handshake leaves a held replica, its primary's address and the phase as they were. One
/// replication at a time (another is told the standby is busy). While a lost primary's replica is held, only that VM's
/// primary is admitted (it is alive, so what was held goes); with --name, only that VM ever is. When the stream breaks or goes
/// silent after an epoch committed, the standby waits until the primary has been silent for the failover timeout,
/// runs the fence command, and only when that succeeds resumes the VM from the last committed epoch; without a fence
/// command it waits for <c>vmm ctl failover</c>, and a fence that fails leaves the VM not running until an operator who
/// made sure the primary is dead says so with <c>vmm ctl failover</c>.
/// A primary that connects again meanwhile is evidently alive: its new stream replaces what was held. A stream that
/// ends on purpose (the primary stopped replicating) or that this standby refuses leaves nothing to resume. Once
/// resumed the VM runs in this process, its control socket at --api-socket, and the exit code is the VM's.
/// A VM the primary handed over (<c>vmm ctl replicate --handover</c>) waits in phase "handed-over" and is resumed on
/// <c>vmm ctl failover</c>, with or without a fence command: the primary confirmed it stopped, so there is nothing to
/// fence, and a planned move is the operator's or cluster manager's to finish when they choose.</summary>
internal sealed class StandbyDaemon(StandbyOptions options, TcpListener listener, MigrationTls? tls, Logger log)
{
    private readonly TimeSpan _failoverTimeout = TimeSpan.FromMilliseconds(options.FailoverTimeoutMs);
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
    /// <summary>Connections not yet past their Hello: bounded, so that no peer holds the standby's place by connecting,
    /// and connecting faster only gets its connections refused (refusals are bounded too).</summary>
    private int _awaitingHello;
    private const int MaxAwaitingHello = 8;
    private readonly ConnectionRefusals _refusals = new();

    /// <summary>One incoming connection: where it came from, and what it received once admitted.</summary>
    private sealed class Session(string source)
    {
        public string Source => source;
        public StandbyReceiver? Receiver { get; set; }
    }

    public int Run()
    {
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => OnSignal(c, 2));
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => OnSignal(c, 15));
        if (options.ApiSocket is { } path) _control = StartSocket(path, p => JsonLineServer.Start(p, (request, _) => HandleControl(request), log, "standby-control"));
        log.Info($"standby: waiting for a primary on {listener.LocalEndpoint} ({(tls is null ? "plain TCP" : $"mutual TLS with {options.TlsDir}")}), failover after {options.FailoverTimeoutMs} ms of silence{(options.FenceCommand is null ? ", on 'vmm ctl failover' (no --fence-command)" : "")}");
        new Thread(AcceptLoop) { Name = "standby-accept", IsBackground = true }.Start();
        _finished.Wait();
        listener.Stop();
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
                    log.Warning($"standby: stopping without resuming VM {orphan.Name}: its disk images stay in {options.DiskDir} as of epoch " +
                                $"{orphan.Epoch} (its memory is lost; boot it from them, or delete them, by hand)");
            }
            _replicating?.Receiver?.Checkpoint?.Dispose();
        }
        return _exitCode;
    }

    private void OnSignal(PosixSignalContext context, int number)
    {
        context.Cancel = true;
        lock (_lock)
        {
            _exitCode = ExitCodes.Signal(number);
            if (_machine is { } machine) machine.RequestStop(VmStop.BySignal(context.Signal.ToString(), number));
            else _finished.Set();
        }
    }

    private void AcceptLoop()
    {
        while (true)
        {
            Socket connection;
            try
            {
                connection = listener.AcceptSocket();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException)
            {
                if (_finished.IsSet) return;
                log.Warning($"standby: accepting a connection failed ({e.Message}); still listening");
                Thread.Sleep(100);
                continue;
            }
            string? busy;
            lock (_lock) busy = _machine is not null ? "the VM runs here already" : null;
            if (busy is null && Interlocked.Increment(ref _awaitingHello) > MaxAwaitingHello)
            {
                Interlocked.Decrement(ref _awaitingHello);
                busy = $"{MaxAwaitingHello} connections are waiting to begin";
            }
            if (busy is not null)
            {
                Refuse(connection, $"the standby is busy: {busy}");
                continue;
            }
            new Thread(() => Receive(connection)) { Name = "standby-receive", IsBackground = true }.Start();
        }
    }

    private void Refuse(Socket connection, string why)
    {
        log.Warning($"standby: refused a connection from {connection.RemoteEndPoint}: {why}");
        _refusals.Refuse(connection, why);
    }

    /// <summary>Admits a session whose Hello checked out, making it the standby's replication, or refuses it (throws):
    /// the VM runs here, another replicates, a fence is under way, another VM's replica is held for its lost primary,
    /// or --name names another VM. The held replica's own primary is admitted: it is alive, so the replica goes.</summary>
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
            if (options.Name is { } bound && hello.Name != bound)
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
    private void Receive(Socket connection)
    {
        string source = connection.RemoteEndPoint?.ToString() ?? "?";
        var session = new Session(source);
        StandbyOutcome outcome;
        Stream? stream = null;
        bool helloLate = false, awaitingHello = true;
        void HelloRead()
        {
            if (!awaitingHello) return;
            awaitingHello = false;
            Interlocked.Decrement(ref _awaitingHello);
        }
        using var helloDeadline = new Timer(_ => { helloLate = true; connection.Dispose(); }, null, MigrationDaemon.HelloDeadline, Timeout.InfiniteTimeSpan);
        try
        {
            connection.NoDelay = true;
            connection.ReceiveBufferSize = 4 << 20;
            // A silent primary is a dead one: a read that waits this long ends the stream.
            connection.ReceiveTimeout = connection.SendTimeout = options.FailoverTimeoutMs;
            stream = IncomingMigrationStream.Open(connection, tls);
            if (stream is SslStream tlsSession) log.Info($"standby: mutual TLS ({tlsSession.SslProtocol}) with {tlsSession.RemoteCertificate?.Subject}");
            var receiver = session.Receiver = new StandbyReceiver(new MigrationChannel(stream), log, Path.GetFullPath(options.DiskDir), _failoverTimeout,
                options.FenceTimeout);
            outcome = receiver.Run(hello =>
            {
                helloDeadline.Change(Timeout.Infinite, Timeout.Infinite);
                HelloRead();
                if (helloLate) throw new MigrationException($"no valid Hello within {MigrationDaemon.HelloDeadline.TotalSeconds:0} s");
                MachineBuilder.CheckCpuid(hello.Description.ToConfig(HostSettings(Stream.Null, hello.Name)));
                Admit(session, hello);
            });
        }
        catch (Exception e)
        {
            outcome = new StandbyOutcome(null, helloLate ? "no valid Hello in time" : e is VmmException ? e.Message : $"internal error in vmm: {e}");
        }
        finally
        {
            HelloRead();
            stream?.Dispose();
            connection.Dispose();
        }
        var sinceHeard = session.Receiver?.SinceHeard ?? TimeSpan.Zero;
        lock (_lock)
        {
            // A session never admitted changes nothing the standby holds.
            if (_replicating != session)
            {
                log.Info($"standby: a connection from {source} ended before it was admitted: {outcome.Reason}");
                return;
            }
            _replicating = null;
            _orphan = outcome.Checkpoint;
            _orphanPrimary = outcome.Checkpoint is null ? null : source;
            _handedOver = outcome.HandedOver;
            _phase = _orphan is null ? "waiting" : outcome.HandedOver ? "handed-over" : "primary-lost";
        }
        if (outcome.Checkpoint is not { } checkpoint)
        {
            log.Info($"standby: replication from {source} ended: {outcome.Reason}; waiting for a primary");
            return;
        }
        if (outcome.HandedOver)
        {
            log.Info($"standby: {outcome.Reason}; the primary stopped it. VM {checkpoint.Name} resumes here on: vmm ctl --socket {options.ApiSocket ?? "API"} failover");
            return;
        }
        log.Warning($"standby: {outcome.Reason}; the replica of {checkpoint.Name} holds epoch {checkpoint.Epoch}, committed {checkpoint.Age.TotalMilliseconds:F0} ms ago");
        // Silent for the whole timeout, counted from its last frame, not from when the connection broke.
        var wait = _failoverTimeout - sinceHeard;
        if (wait > TimeSpan.Zero) Thread.Sleep(wait);
        if (options.FenceCommand is null)
        {
            log.Warning("standby: no --fence-command: the VM is resumed here on 'vmm ctl failover', once the primary is known to be dead");
            return;
        }
        TryFailover(checkpoint, manual: false);
    }

    /// <summary>Resumes the VM: on the primary's silence only once the fence command succeeds; on the operator's
    /// <c>vmm ctl failover</c> (<paramref name="manual"/>) at once.</summary>
    private string? TryFailover(StandbyCheckpoint checkpoint, bool manual)
    {
        bool handedOver;
        lock (_lock)
        {
            if (_orphan != checkpoint || _fencing || _machine is not null) return "the replica is no longer waiting for a failover";
            handedOver = _handedOver;
            _fencing = true;
            _phase = "fencing";
        }
        var failingOver = Stopwatch.StartNew();
        try
        {
            double fenceMs = 0;
            // 'vmm ctl failover' is the operator's word that the primary is dead (as Pacemaker's stonith_admin --confirm):
            // it is how a VM whose fencing failed gets resumed, so the fence that failed is not asked again.
            if (!manual)
            {
                if (options.FenceCommand is not { } fence) return "no fence command";
                var fencing = Stopwatch.StartNew();
                if (Fence(fence, checkpoint) is { } refusal)
                {
                    log.Error($"standby: fencing the primary failed ({refusal}); the VM is NOT resumed here (it may still run there). After making sure the primary is dead: vmm ctl --socket {options.ApiSocket ?? "API"} failover");
                    lock (_lock) _phase = "fence-failed";
                    return $"fencing the primary failed: {refusal}";
                }
                fenceMs = fencing.Elapsed.TotalMilliseconds;
            }
            var age = checkpoint.Age;
            string name = checkpoint.Name;
            long epoch = checkpoint.Epoch;
            _serialLog = options.SerialLog is null ? null : SerialLogFile.Open(VmName.Expand(options.SerialLog, name));
            var machine = checkpoint.Resume(HostSettings(_serialLog ?? Console.OpenStandardOutput(), name), log);
            lock (_lock)
            {
                _orphan = null;
                _machine = machine;
                _phase = "running";
            }
            // This may be the standby socket's own failover request, which its Dispose waits for: swap it on another thread.
            if (options.ApiSocket is { } path) _controlSwap = Task.Run(() => SwapControlSocket(path, machine));
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

    private void SwapControlSocket(string path, Machine machine)
    {
        _control?.Dispose();
        try
        {
            _control = StartSocket(path, p => ControlServer.Start(machine, p, log));
        }
        catch (ConfigurationException e)
        {
            log.Error($"standby: the resumed VM runs without a control socket: {e.Message}");
        }
    }

    private static readonly TimeSpan FenceOutputGrace = TimeSpan.FromSeconds(2);

    /// <summary>Runs the fence command; null when it says the primary is fenced, otherwise why not.</summary>
    private string? Fence(string command, StandbyCheckpoint checkpoint)
    {
        log.Info($"standby: fencing the primary: {command}");
        var start = new ProcessStartInfo("/bin/sh", ["-c", command]) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["VMM_VM_NAME"] = checkpoint.Name;
        start.Environment["VMM_EPOCH"] = checkpoint.Epoch.ToString(System.Globalization.CultureInfo.InvariantCulture);
        lock (_lock) start.Environment["VMM_PRIMARY"] = _orphanPrimary ?? "";
        try
        {
            using var process = Process.Start(start)!;
            var said = new StringBuilder();
            // Not disposed: a process the fence command left behind may end its output, and signal this, long after.
            var outputEnded = new CountdownEvent(2);
            void Collect(DataReceivedEventArgs e)
            {
                if (e.Data is null) outputEnded.Signal();
                else lock (said) said.AppendLine(e.Data);
            }
            process.OutputDataReceived += (_, e) => Collect(e);
            process.ErrorDataReceived += (_, e) => Collect(e);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            if (!process.WaitForExit(options.FenceTimeout))
            {
                process.Kill(entireProcessTree: true);
                return $"it ran past --fence-timeout-s {options.FenceTimeout.TotalSeconds:0}";
            }
            // Its exit is its answer. Something it left running may hold its output open: that is not waited for.
            bool ended = outputEnded.Wait(FenceOutputGrace);
            string text;
            lock (said) text = said.ToString().Trim();
            if (text.Length > 0) log.Info($"standby: the fence command said: {text}");
            if (!ended) log.Warning("standby: the fence command exited, but something it started still holds its output open");
            return process.ExitCode == 0 ? null : $"it exited with {process.ExitCode}";
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
        {
            return $"it could not run: {e.Message}";
        }
    }

    private MachineConfig HostSettings(Stream serial, string name) =>
        RunCommand.HostSettings(serial, options.NoNestedWorkarounds, dirtyRing: false, dirtyRingEntries: null) with { Name = name };

    private byte[] HandleControl(ReadOnlySpan<byte> request)
    {
        if (JsonAnswers.Parse(request, out byte[] malformed) is not var (_, command)) return malformed;
        switch (command)
        {
            case "status":
                return Status();
            case "failover":
                StandbyCheckpoint? orphan;
                lock (_lock)
                {
                    if (_replicating is { Receiver: { } receiver } replicating && receiver.SinceHeard < _failoverTimeout)
                        return JsonAnswers.Error($"the primary {replicating.Source} was heard from {receiver.SinceHeard.TotalMilliseconds:F0} ms ago: it is alive, so the VM is not resumed here");
                    orphan = _orphan;
                }
                if (orphan is null) return JsonAnswers.Error("there is no replica waiting for a failover here");
                return TryFailover(orphan, manual: true) is { } refusal ? JsonAnswers.Error(refusal) : Status();
            default:
                return JsonAnswers.Error($"unknown command '{command}' for a standby (expected status or failover)");
        }
    }

    private byte[] Status() => JsonAnswers.Json(writer =>
    {
        lock (_lock)
        {
            var receiver = _replicating?.Receiver;
            var checkpoint = _orphan ?? receiver?.Checkpoint;
            writer.WriteBoolean("ok", true);
            writer.WriteString("state", "standby");
            writer.WriteString("phase", _phase);
            if ((_replicating?.Source ?? _orphanPrimary) is { } primary) writer.WriteString("primary", primary);
            if (options.Name is { } bound) writer.WriteString("boundTo", bound);
            if (checkpoint is not null)
            {
                writer.WriteString("name", checkpoint.Name);
                writer.WriteNumber("epoch", checkpoint.Epoch);
                writer.WriteNumber("epochAgeMs", Math.Round(checkpoint.Age.TotalMilliseconds, 1));
            }
            if (receiver is not null) writer.WriteNumber("sinceHeardMs", Math.Round(receiver.SinceHeard.TotalMilliseconds, 1));
        }
    });

    private static IDisposable StartSocket(string path, Func<string, IDisposable> start)
    {
        try
        {
            return start(path);
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException)
        {
            throw new ConfigurationException($"--api-socket {path}: {e.Message}");
        }
    }
}
