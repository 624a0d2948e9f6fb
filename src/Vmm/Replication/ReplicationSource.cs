using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Migration;
using Vmm.State;
using Vmm.Vm;

namespace Vmm.Replication;

/// <summary>The primary side of replication (Remus-style checkpointing) to a <c>vmm standby</c>. After a first
/// full copy of RAM and disks while the guest runs, the VM runs in epochs: at each boundary the vCPUs and the
/// device thread pause, the dirty pages, the changed disk blocks and the device and vCPU state are copied into a
/// local staging buffer, the guest resumes at once, and then the epoch is sent. The standby applies it and says so;
/// only then does the guest's output of that epoch (console bytes, TAP frames, held by the machine's
/// <see cref="Vmm.Devices.GuestOutputGate"/>) leave this host. Replication runs on its own thread and is a failure
/// boundary: whatever ends it (the standby lost, a bug) leaves the VM running here, unprotected, and says why in
/// <see cref="Status"/>. Output held when the standby is lost leaves only once the standby would have failed over
/// (twice its failover timeout after the last word from it): a standby fences this primary before it resumes, so
/// nothing it might take back is released while it could still take over. A planned handover (<see cref="HandOver"/>)
/// ends replication the other way: a last epoch taken with the VM left paused, and the VM stopped here once the standby
/// confirmed it holds that epoch.</summary>
public sealed class ReplicationSource : IDisposable
{
    /// <summary>How often the log sums up the epochs (each one is logged at debug level).</summary>
    private static readonly TimeSpan SummaryEvery = TimeSpan.FromSeconds(10);

    private readonly Machine _machine;
    private readonly ReplicationOptions _options;
    private readonly Logger _log;
    /// <summary>How long a stopped VM's replication may take to tell the standby before its connection is cut.</summary>
    private static readonly TimeSpan StoppedVmGrace = TimeSpan.FromSeconds(2);
    /// <summary>How long a standby has to answer an Abort (it discards its copy, then says so).</summary>
    private static readonly TimeSpan AbortAnswerTimeout = TimeSpan.FromSeconds(1);
    /// <summary>How long a standby has to answer a Handover (it only checks that nothing is kept aside, then says so).</summary>
    private static readonly TimeSpan HandoverAnswerTimeout = TimeSpan.FromSeconds(5);
    private readonly Thread _thread;
    /// <summary>Held from an epoch's pause to its resume, and by control requests that pause or resume the VM
    /// (<see cref="HoldEpochs"/>), so neither undoes the other's pause.</summary>
    private readonly object _epochLock = new();
    private readonly ManualResetEventSlim _protectedOrEnded = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly EpochStaging _staging = new();
    /// <summary>Signalled by <see cref="HandOver"/>: the epoch loop takes the final epoch at once.</summary>
    private readonly ManualResetEventSlim _handoverAsked = new();
    /// <summary>Guards <see cref="_handover"/> and <see cref="_ended"/>, so a handover asked for as replication ends is answered.</summary>
    private readonly object _handoverLock = new();
    /// <summary>The handover asked for, completed with the epoch handed over, or failed with why.</summary>
    private TaskCompletionSource<long>? _handover;
    private bool _ended;
    private volatile ReplicationStatus _status;
    private Exception? _startFailure;
    private TimeSpan _standbyFailoverTimeout;
    /// <summary>The longest the standby's fence command may run (zero: it has none, and resumes only when an operator
    /// says the primary is dead).</summary>
    private TimeSpan _standbyFenceTimeout;
    /// <summary>When the standby last answered (ticks of <see cref="Stopwatch"/>).</summary>
    private long _lastHeardTicks;
    private long _lastCommittedCheckpointTicks;
    /// <summary>Set once epochs have ended: what is left is the hold of the guest's output (state "losing").</summary>
    private volatile bool _epochsEnded;
    /// <summary>When the output hold after a lost standby ends (ticks of <see cref="Stopwatch"/>; 0: no hold).</summary>
    private long _holdEndsTicks;

    private ReplicationSource(Machine machine, ReplicationOptions options, Logger log)
    {
        _machine = machine;
        _options = options;
        _log = log;
        _status = new ReplicationStatus { State = "connecting", Standby = options.Standby, IntervalMs = options.IntervalMs };
        _thread = new Thread(Run) { Name = "replication", IsBackground = true };
    }

    /// <summary>Starts replicating <paramref name="machine"/> on a thread of its own.</summary>
    public static ReplicationSource Start(Machine machine, ReplicationOptions options, Logger log)
    {
        if (options.IntervalMs is < 5 or > 60_000) throw new ReplicationException($"an epoch interval of {options.IntervalMs} ms; it must be 5-60000");
        if (!MigrationSource.TryParseEndpoint(options.Standby, out _, out _)) throw new ReplicationException($"'{options.Standby}' is not HOST:PORT");
        var source = new ReplicationSource(machine, options, log);
        source._thread.Start();
        return source;
    }

    public ReplicationStatus Status
    {
        get
        {
            var status = _status;
            var output = _machine.Output;
            return status with
            {
                OutputHeldBytes = output.HeldBytes,
                OutputDroppedBytes = output.DroppedBytes,
                OutputDelayAverageMs = output.ReleaseDelay.AverageMs,
                OutputDelayMaxMs = output.ReleaseDelay.MaxMs,
                LagMs = status.Epoch == 0 ? 0 : Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastCommittedCheckpointTicks)).TotalMilliseconds,
                HoldRemainingMs = status.State == "losing" ? Math.Max(0, -Stopwatch.GetElapsedTime(Interlocked.Read(ref _holdEndsTicks)).TotalMilliseconds) : 0,
            };
        }
    }

    /// <summary>Whether replication still runs (copying, protected, or losing: the standby lost, and the output held
    /// until it can no longer take over). Nothing else may move the VM meanwhile.</summary>
    public bool IsActive => _thread.IsAlive;

    /// <summary>The standby is lost and the guest's output held until it can no longer take over: replication has
    /// ended, but not its promise to that standby.</summary>
    public bool IsLosing => _epochsEnded && _thread.IsAlive;

    /// <summary>Waits until the standby has committed the first epoch: the VM is protected from then on. Throws a
    /// <see cref="ReplicationException"/> saying why when replication ended before.</summary>
    public void WaitUntilProtected()
    {
        _protectedOrEnded.Wait();
        if (_startFailure is { } failure) throw failure as ReplicationException ?? new ReplicationException(failure.Message, failure);
    }

    /// <summary>Keeps epochs from pausing or resuming the VM while the caller does (a pause, resume or snapshot).</summary>
    public EpochHold HoldEpochs() => new(_epochLock);

    public readonly struct EpochHold : IDisposable
    {
        private readonly object _lock;
        public EpochHold(object epochLock) { _lock = epochLock; Monitor.Enter(_lock); }
        public void Dispose() => Monitor.Exit(_lock);
    }

    /// <summary>Hands the VM over to the standby: at once (an epoch boundary), the VM is paused and left paused, a final
    /// epoch is taken and committed there, its output released, and the standby confirms it holds that epoch as the
    /// VM's last. Returns the epoch handed over; replication has ended and the caller stops the VM. Throws a
    /// <see cref="ReplicationException"/> when the VM is not protected (nothing changes) or the handover failed (the
    /// VM runs on here, unprotected).</summary>
    public long HandOver()
    {
        var handover = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_handoverLock)
        {
            if (_ended || _status is not { State: "protected", Epoch: > 0 })
                throw new ReplicationException($"the VM is not protected (replication is {_status.State}): there is nothing to hand over");
            if (_handover is not null) throw new ReplicationException("a handover is under way already");
            _handover = handover;
        }
        _handoverAsked.Set();
        try
        {
            return handover.Task.GetAwaiter().GetResult();
        }
        finally
        {
            lock (_handoverLock) _handover = null;
        }
    }

    /// <summary>Ends replication on purpose: the standby is told (and discards its copy), the output held leaves,
    /// and the VM runs on here. Returns once replication has ended, or at once when it has already (the standby lost):
    /// the output hold then runs its course, as the lost standby may still take over.</summary>
    public void Stop()
    {
        _stop.Cancel();
        if (!_epochsEnded) _thread.Join();
    }

    /// <summary>Ends replication and waits for its thread, the output hold after a lost standby included: a VM that
    /// stopped lets out its held output only once that standby can no longer take over.</summary>
    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join();
        _stop.Dispose();
        _handoverAsked.Dispose();
    }

    private void Run()
    {
        using var ram = _machine.Memory.Lease();
        bool toldStandby, reprotecting = false;
        string? why;
        long handedOver;
        while (true)
        {
            (toldStandby, why, handedOver) = Replicate(reprotecting);
            _epochsEnded = true;
            // Handed over, the standby knows, and the paused VM has nothing held past the final epoch's release.
            if (ReleaseHeldOutput(toldStandby || handedOver > 0, why) != HoldEnd.StandbyAnsweredAgain) break;
            reprotecting = true;
            _epochsEnded = false;
            _status = _status with { State = "connecting", Epoch = 0, Reason = null };
        }
        _status = _status with { State = handedOver > 0 ? "handed-over" : "unprotected", Reason = why };
        if (handedOver > 0) _log.Info($"replication: VM handed over to {_options.Standby} at epoch {handedOver}; it stops here");
        else if (_machine.StopReason is null) _log.Warning($"replication to {_options.Standby} ended: {why}; the VM runs on here, unprotected");
        _protectedOrEnded.Set();
        lock (_handoverLock)
        {
            _ended = true;
            if (handedOver > 0) _handover?.TrySetResult(handedOver);
            else _handover?.TrySetException(new ReplicationException($"the handover to {_options.Standby} failed: {why}; the VM runs on here, unprotected"));
        }
    }

    /// <summary>One replication stream, from the connection to its end: whether the standby knows it ended (and so will
    /// not resume the VM), why it ended, and the epoch handed over (0: none).</summary>
    private (bool ToldStandby, string? Why, long HandedOver) Replicate(bool reprotecting)
    {
        bool toldStandby = false;
        string? why = null;
        DirtyPageTracker? tracker = null;
        DiskCopySender? disks = null;
        OutgoingConnections? connection = null;
        long handedOver = 0;
        try
        {
            MigrationSource.TryParseEndpoint(_options.Standby, out string host, out int port);
            using var tls = _options.TlsDirectory is { } directory ? LoadTls(directory) : null;
            connection = new OutgoingConnections(host, port, _options.Standby, _options.IoTimeout, tls, "vmm standby --listen");
            var socket = connection.MainSocket;
            // A VM that stops is not lost: the standby must hear so (an Abort), or it would fence this host and resume
            // the VM. The epoch loop notices the stop at once. During the first copy (long writes, a 30 s timeout) a send
            // still blocked after the grace is cut; from the epochs on, every send and read ends within the socket's
            // timeout, and cutting one that is merely slow (a loaded host) would turn a clean stop into a failover.
            using var cutOff = new Timer(_ => connection.CloseAll());
            using var onVmStop = _machine.Stopping.Register(() => cutOff.Change(StoppedVmGrace, Timeout.InfiniteTimeSpan));
            var channel = connection.OpenMain(_log);
            SendHello(channel);
            tracker = _machine.StartDirtyTracking();
            disks = new DiskCopySender(_machine.Disks);
            CopyEverything(channel, tracker, disks);
            onVmStop.Dispose();
            // From here on a silent standby is a lost one: it fails over after its own timeout, and we wait twice that.
            socket.SendTimeout = socket.ReceiveTimeout = (int)Math.Max(1000, 2 * _standbyFailoverTimeout.TotalMilliseconds);
            handedOver = RunEpochs(channel, socket, tracker, disks);
        }
        catch (Exception e)
        {
            why = _machine.StopReason is { } stop ? $"the VM stopped ({stop.Description})"
                : _stop.IsCancellationRequested ? "stopped on the primary"
                : e is StandbyGaveUpException ? e.Message
                : e is VmmException ? e.Message
                : $"internal error in vmm: {e}";
            toldStandby = e is StandbyGaveUpException || TryAbort(connection, why);
            if (_status.Epoch == 0 && !reprotecting) _startFailure = new ReplicationException($"replication to {_options.Standby} failed: {why}", e);
        }
        finally
        {
            _staging.Clear();
            disks?.Dispose();
            if (tracker is not null) _machine.StopDirtyTracking(tracker);
            connection?.Dispose();
        }
        return (toldStandby, why, handedOver);
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

    private void SendHello(MigrationChannel channel)
    {
        var description = MachineDescription.Of(_machine.Config) with { VcpuCpuid = _machine.VcpuCpuid };
        var hello = new MigrationHello(_machine.Config.Name, description, _machine.Disks.Select(d => d.CapacityBytes).ToArray(), Replication: true);
        channel.Send(MigrationFrameType.Hello, hello.ToBytes());
        channel.Flush();
        byte[] buffer = new byte[4096];
        var (type, payload) = channel.Receive(ref buffer);
        if (type == MigrationFrameType.Error) throw new StandbyGaveUpException($"the standby refused the VM: {System.Text.Encoding.UTF8.GetString(payload.Span)}");
        if (type != MigrationFrameType.Ready || payload.Length != 8) throw new ReplicationException($"the standby answered the Hello with {type}, not Ready: is it a 'vmm standby'?");
        int failoverMs = BinaryPrimitives.ReadInt32LittleEndian(payload.Span);
        int fenceMs = BinaryPrimitives.ReadInt32LittleEndian(payload.Span[4..]);
        if (failoverMs <= 0 || fenceMs < 0) throw new ReplicationException($"the standby gave a failover timeout of {failoverMs} ms and a fence timeout of {fenceMs} ms");
        _standbyFailoverTimeout = TimeSpan.FromMilliseconds(failoverMs);
        _standbyFenceTimeout = TimeSpan.FromMilliseconds(fenceMs);
        Heard();
    }

    /// <summary>The most catch-up passes after the first full copy.</summary>
    private const int MaxCatchUpPasses = 5;

    /// <summary>The first full copy, while the guest runs: every disk extent that holds data, every page that may; then,
    /// still running, passes of what the guest changed meanwhile, each acknowledged by the standby (so each is paced by
    /// the link, not by socket buffers), until that stops shrinking. The first epoch, copied with the guest paused into
    /// memory, then holds only what changed since the last pass, not everything the guest wrote during the whole copy.
    /// The standby applies each pass in place: nothing of it is committed yet.</summary>
    private void CopyEverything(MigrationChannel channel, DirtyPageTracker tracker, DiskCopySender disks)
    {
        _status = _status with { State = "copying" };
        var copying = Stopwatch.StartNew();
        long diskBytes;
        long pages;
        var catchUp = new List<long>();
        using (var writer = new FrameWriter([channel]))
        {
            diskBytes = disks.SendAllocated(writer);
            pages = PageFrames.Build(writer, _machine.Memory, DirtyPages.MayHoldData(_machine.Memory)).Pages;
            writer.Drain();
            EndPass(channel, 1);
            long previous = long.MaxValue;
            for (int pass = 2; pass <= 1 + MaxCatchUpPasses; pass++)
            {
                var dirty = tracker.Collect();
                long changed = dirty.Count + disks.CollectDirty() / MigrationChannel.PageSize;
                if (changed == 0) break;
                diskBytes += disks.SendPending(writer);
                PageFrames.Build(writer, _machine.Memory, dirty);
                writer.Drain();
                EndPass(channel, pass);
                catchUp.Add(dirty.Count);
                // Done once what changed stops shrinking by a tenth: more passes would only chase the guest.
                if (changed > previous * 9 / 10) break;
                previous = changed;
            }
        }
        _log.Info($"replication: first full copy to {_options.Standby} in {copying.Elapsed.TotalMilliseconds:F0} ms ({pages} pages, {diskBytes >> 20} MiB of disk; " +
                  $"then pages changed meanwhile: {string.Join(", ", catchUp)})");
    }

    private void EndPass(MigrationChannel channel, int pass)
    {
        channel.Send(MigrationFrameType.PassEnd, BitConverter.GetBytes(pass));
        channel.Flush();
        OutgoingConnections.ExpectFrame(channel, MigrationFrameType.PassDone, pass == 1 ? "the standby did not take the first full copy" : $"the standby did not take catch-up pass {pass}");
        Heard();
    }

    /// <summary>Runs epochs until replication fails (an exception) or the VM is handed over (the epoch it was
    /// handed over at).</summary>
    private long RunEpochs(MigrationChannel channel, Socket socket, DirtyPageTracker tracker, DiskCopySender disks)
    {
        var interval = TimeSpan.FromMilliseconds(_options.IntervalMs);
        var heartbeatEvery = _standbyFailoverTimeout / 3;
        long epoch = 0;
        var sinceEpoch = Stopwatch.StartNew();
        var sinceSummary = Stopwatch.StartNew();
        while (true)
        {
            // Wait out the interval (none left when the last commit took longer); a long one is broken by heartbeats,
            // so the standby never finds us silent.
            do
            {
                var wait = interval - sinceEpoch.Elapsed;
                if (wait > heartbeatEvery) wait = heartbeatEvery;
                int signalled = WaitHandle.WaitAny([_stop.Token.WaitHandle, _machine.Stopping.WaitHandle, _handoverAsked.WaitHandle], wait < TimeSpan.Zero ? TimeSpan.Zero : wait);
                if (signalled == 2)
                {
                    HandOverFinalEpoch(channel, socket, tracker, disks, epoch + 1);
                    return epoch + 1;
                }
                if (signalled != WaitHandle.WaitTimeout) throw new ReplicationException("stopped");
                if (Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastHeardTicks)) >= heartbeatEvery) Heartbeat(channel);
            }
            while (sinceEpoch.Elapsed < interval);
            sinceEpoch.Restart();
            EpochCheckpoint checkpoint;
            double pauseMs;
            lock (_epochLock)
            {
                // Paused by the user: nothing changes, so there is nothing to checkpoint; only say we are here.
                if (_machine.IsPaused)
                {
                    Heartbeat(channel);
                    continue;
                }
                epoch++;
                var pause = Stopwatch.StartNew();
                _machine.Pause();
                try
                {
                    checkpoint = TakeCheckpoint(epoch, tracker, disks);
                }
                finally
                {
                    _machine.Resume();
                }
                pauseMs = pause.Elapsed.TotalMilliseconds;
            }
            var committing = Stopwatch.StartNew();
            Commit(channel, epoch, checkpoint);
            _status = _status with
            {
                State = "protected", Epoch = epoch, PauseMs = pauseMs, CommitLatencyMs = committing.Elapsed.TotalMilliseconds,
                PagesLastEpoch = checkpoint.Pages, DiskBytesLastEpoch = checkpoint.DiskBytes,
            };
            if (epoch == 1)
            {
                _log.Info($"replication: protected; epochs of {_options.IntervalMs} ms commit on {_options.Standby}");
                _protectedOrEnded.Set();
            }
            _log.Debug($"replication: epoch {epoch} committed: pause {pauseMs:F2} ms, {checkpoint.Pages} pages, {checkpoint.DiskBytes >> 10} KiB of disk, commit {committing.Elapsed.TotalMilliseconds:F1} ms");
            if (sinceSummary.Elapsed >= SummaryEvery)
            {
                var status = Status;
                _log.Info($"replication: epoch {epoch} ({_options.IntervalMs} ms epochs) to {_options.Standby}: last pause {status.PauseMs:F2} ms, commit {status.CommitLatencyMs:F1} ms, " +
                          $"{status.PagesLastEpoch} pages and {status.DiskBytesLastEpoch >> 10} KiB of disk, {status.OutputHeldBytes} bytes of output held, lag {status.LagMs:F0} ms");
                sinceSummary.Restart();
            }
        }
    }

    /// <summary>What one epoch's pause copied into the staging buffer, besides the state.</summary>
    private readonly record struct EpochCheckpoint(byte[] State, long Pages, long DiskBytes, long Ticks);

    /// <summary>Copies what changed since the last epoch into the staging buffer; the VM is paused.</summary>
    private EpochCheckpoint TakeCheckpoint(long epoch, DirtyPageTracker tracker, DiskCopySender disks)
    {
        long ticks = Stopwatch.GetTimestamp();
        var dirty = tracker.Collect();
        disks.CollectDirty();
        long diskBytes = disks.SendPending(_staging);
        long pages = PageFrames.Build(_staging, _machine.Memory, dirty).Pages;
        byte[] state = MachinePersistence.Save(_machine).ToBytes();
        // Output from here on belongs to the next epoch. Before the first checkpoint nothing could be
        // taken back (a standby without a committed epoch never resumes), so holding starts now.
        if (epoch == 1) _machine.Output.StartHolding(2);
        else _machine.Output.Seal(epoch);
        return new EpochCheckpoint(state, pages, diskBytes, ticks);
    }

    /// <summary>Sends the epoch, waits for the standby's commit, and lets the epoch's output leave.</summary>
    private void Commit(MigrationChannel channel, long epoch, EpochCheckpoint checkpoint)
    {
        _staging.SendAll(channel);
        channel.Send(MigrationFrameType.State, checkpoint.State);
        channel.Send(MigrationFrameType.EpochEnd, BitConverter.GetBytes(epoch));
        channel.Flush();
        ExpectEpochAnswer(channel, MigrationFrameType.EpochCommitted, epoch);
        _machine.Output.Release(epoch);
        Interlocked.Exchange(ref _lastCommittedCheckpointTicks, checkpoint.Ticks);
    }

    /// <summary>The final epoch of a handover: taken like any other, but the VM stays paused through its commit and
    /// the standby's answer to the Handover, and after it. The epoch lock stays held meanwhile, so nothing resumes it.</summary>
    private void HandOverFinalEpoch(MigrationChannel channel, Socket socket, DirtyPageTracker tracker, DiskCopySender disks, long epoch)
    {
        lock (_epochLock)
        {
            bool pausedBefore = _machine.IsPaused;
            _machine.Pause();
            try
            {
                var committing = Stopwatch.StartNew();
                var checkpoint = TakeCheckpoint(epoch, tracker, disks);
                Commit(channel, epoch, checkpoint);
                _status = _status with
                {
                    Epoch = epoch, CommitLatencyMs = committing.Elapsed.TotalMilliseconds,
                    PagesLastEpoch = checkpoint.Pages, DiskBytesLastEpoch = checkpoint.DiskBytes,
                };
                channel.Send(MigrationFrameType.Handover, BitConverter.GetBytes(epoch));
                channel.Flush();
                socket.ReceiveTimeout = (int)HandoverAnswerTimeout.TotalMilliseconds;
                ExpectEpochAnswer(channel, MigrationFrameType.Handover, epoch);
            }
            catch
            {
                // No answer, no handover: the VM runs on here. Should the link have broken after the final commit, the
                // standby holds that epoch and, having lost us, may resume it; but it fences this primary first (or
                // waits for an operator's word that it is dead), so resuming here is as safe as after any lost
                // standby, and the output held from now on waits for that fence as it does then.
                if (!pausedBefore) _machine.Resume();
                throw;
            }
        }
    }

    /// <summary>Reads the standby's answer about <paramref name="epoch"/>: its commit, or the echo of a handover.</summary>
    private void ExpectEpochAnswer(MigrationChannel channel, MigrationFrameType expected, long epoch)
    {
        byte[] buffer = new byte[4096];
        var (type, payload) = channel.Receive(ref buffer);
        if (type == MigrationFrameType.Error) throw new StandbyGaveUpException($"the standby gave up: {System.Text.Encoding.UTF8.GetString(payload.Span)}");
        if (type != expected || payload.Length != 8 || BinaryPrimitives.ReadInt64LittleEndian(payload.Span) != epoch)
            throw new ReplicationException($"the standby answered epoch {epoch} with {type}, not {expected}");
        Heard();
    }

    private void Heartbeat(MigrationChannel channel)
    {
        channel.Send(MigrationFrameType.Heartbeat, []);
        channel.Flush();
        byte[] buffer = new byte[4096];
        var (type, payload) = channel.Receive(ref buffer);
        if (type == MigrationFrameType.Error) throw new StandbyGaveUpException($"the standby gave up: {System.Text.Encoding.UTF8.GetString(payload.Span)}");
        if (type != MigrationFrameType.Heartbeat) throw new ReplicationException($"the standby answered a heartbeat with {type}");
        Heard();
    }

    private void Heard() => Interlocked.Exchange(ref _lastHeardTicks, Stopwatch.GetTimestamp());

    /// <summary>Tells the standby replication ends on purpose, so it discards its copy instead of failing over.</summary>
    /// <summary>Only an answer counts: an Abort written into a link that went silent never arrives, and that standby
    /// will fence this host and resume the VM.</summary>
    private static bool TryAbort(OutgoingConnections? connection, string why)
    {
        if (connection is null || connection.Channels.Count == 0 || !connection.MainSocket.Connected) return false;
        try
        {
            connection.MainSocket.SendTimeout = connection.MainSocket.ReceiveTimeout = (int)AbortAnswerTimeout.TotalMilliseconds;
            var channel = connection.Main;
            channel.SendText(MigrationFrameType.Abort, why);
            channel.Flush();
            byte[] buffer = new byte[4096];
            // An epoch's commit (or a late answer to a handover) may still be on its way; the answer to the Abort comes after it.
            for (int frames = 0; frames < 4; frames++)
            {
                var (type, _) = channel.Receive(ref buffer);
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

    /// <summary>A standby that knows replication ended will not resume the VM: what is held may leave now. One that
    /// may still take over (silent, cut off) fences this host first, within its failover timeout: output leaves
    /// only once that time has passed twice over since the standby last answered, and this primary still runs.</summary>
    private enum HoldEnd { Released, StandbyAnsweredAgain }

    /// <summary>How often a primary that lost its standby knocks on its address again while it holds the output.</summary>
    private static readonly TimeSpan ReknockEvery = TimeSpan.FromSeconds(1);

    private HoldEnd ReleaseHeldOutput(bool standbyKnows, string? why)
    {
        var end = HoldEnd.Released;
        if (_machine.Output.IsHolding && !standbyKnows)
        {
            // It starts fencing once we have been silent for its failover timeout, and the fence may run its whole
            // timeout; one failover timeout more covers the resume and the clocks' drift.
            var wait = 2 * _standbyFailoverTimeout + _standbyFenceTimeout - Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastHeardTicks));
            if (wait > TimeSpan.Zero)
            {
                // Not protected any more, and said so at once: the hold is the lost standby's due, not protection.
                Interlocked.Exchange(ref _holdEndsTicks, Stopwatch.GetTimestamp() + (long)(wait.TotalSeconds * Stopwatch.Frequency));
                _status = _status with { State = "losing", Reason = why };
                _log.Info($"replication: the standby may still take over; the guest's output stays held for {wait.TotalMilliseconds:F0} ms more, unless a standby answers at {_options.Standby} again");
                end = WaitOutHold();
            }
        }
        _machine.Output.StopHolding();
        // Out before the VM's process may close its console; a console blocked for good loses what is left, as unheld.
        if (!_machine.Output.WaitUntilWritten(ReleasedOutputGrace))
            _log.Warning($"replication: the guest's released output could not all be written out within {ReleasedOutputGrace.TotalSeconds:0} s (a blocked console?)");
        return end;
    }

    private static readonly TimeSpan ReleasedOutputGrace = TimeSpan.FromSeconds(10);

    /// <summary>Waits until the lost standby can no longer take over: its hold ran out, or a standby admitted this VM at
    /// its address again, which ends the old replica there (a standby gives a lost primary's replica up only to that
    /// VM's own primary, and a new process on that address means the old one is gone). A VM that stops meanwhile, or a
    /// replicate --stop, waits the hold out: the standby may still resume an epoch before the held output, and then the
    /// guest would say it again.</summary>
    private HoldEnd WaitOutHold()
    {
        while (true)
        {
            var left = -Stopwatch.GetElapsedTime(Interlocked.Read(ref _holdEndsTicks));
            if (left <= TimeSpan.Zero) return HoldEnd.Released;
            if (_machine.StopReason is not null || _stop.IsCancellationRequested)
            {
                if (_machine.StopReason is not null)
                    _log.Info($"replication: the VM stopped; its {_machine.Output.HeldBytes} bytes of held output leave in {left.TotalMilliseconds:F0} ms, once the lost standby can no longer take over");
                Thread.Sleep(left);
                return HoldEnd.Released;
            }
            if (StandbyAdmitsUsAgain())
            {
                _log.Warning($"replication: a standby at {_options.Standby} admitted this VM again, so the one lost there can no longer take over; the held output leaves, and replication starts over");
                return HoldEnd.StandbyAnsweredAgain;
            }
            WaitHandle.WaitAny([_machine.Stopping.WaitHandle, _stop.Token.WaitHandle], left < ReknockEvery ? left : ReknockEvery);
        }
    }

    /// <summary>Knocks: a Hello, and on the standby's Ready an Abort at once (it discards the nothing it took). True when
    /// it was admitted.</summary>
    private bool StandbyAdmitsUsAgain()
    {
        OutgoingConnections? connection = null;
        try
        {
            MigrationSource.TryParseEndpoint(_options.Standby, out string host, out int port);
            using var tls = _options.TlsDirectory is { } directory ? LoadTls(directory) : null;
            connection = new OutgoingConnections(host, port, _options.Standby, ReknockEvery * 2, tls, "vmm standby --listen");
            SendHello(connection.OpenMain(_log));
            TryAbort(connection, "the primary knocked to learn whether its lost standby is gone; replication starts over");
            return true;
        }
        catch (Exception e) when (e is VmmException or IOException or SocketException or ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            connection?.Dispose();
        }
    }

    /// <summary>The standby said it ends replication (it refused or failed): it will not resume the VM.</summary>
    private sealed class StandbyGaveUpException(string message) : VmmException(message);
}
