using System.Diagnostics;
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
/// confirmed it holds that epoch. The wire protocol is <see cref="StandbyLink"/>'s, the output hold after a lost
/// standby <see cref="LostStandbyHold"/>'s, and the meeting of a handover's request with this thread
/// <see cref="HandoverRequest"/>'s.</summary>
public sealed class ReplicationSource : IDisposable
{
    /// <summary>How often the log sums up the epochs (each one is logged at debug level).</summary>
    private static readonly TimeSpan SummaryEvery = TimeSpan.FromSeconds(10);
    /// <summary>How long a stopped VM's replication may take to tell the standby before its connection is cut.</summary>
    private static readonly TimeSpan StoppedVmGrace = TimeSpan.FromSeconds(2);
    /// <summary>The most catch-up passes after the first full copy.</summary>
    private const int MaxCatchUpPasses = 5;

    private readonly Machine _machine;
    private readonly ReplicationOptions _options;
    private readonly Logger _log;
    private readonly Thread _thread;
    /// <summary>Held from an epoch's pause to its resume, and by control requests that pause or resume the VM
    /// (<see cref="HoldEpochs"/>), so neither undoes the other's pause.</summary>
    private readonly object _epochLock = new();
    private readonly ManualResetEventSlim _protectedOrEnded = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly EpochStaging _staging = new();
    private readonly HandoverRequest _handover = new();
    private readonly LostStandbyHold _hold;
    private volatile ReplicationStatus _status;
    private Exception? _startFailure;
    private long _lastCommittedCheckpointTicks;
    /// <summary>Set once epochs have ended: what is left is the hold of the guest's output (state "losing").</summary>
    private volatile bool _epochsEnded;

    private ReplicationSource(Machine machine, ReplicationOptions options, Logger log)
    {
        _machine = machine;
        _options = options;
        _log = log;
        _status = new ReplicationStatus { State = "connecting", Standby = options.Standby, IntervalMs = options.IntervalMs };
        _hold = new LostStandbyHold(machine, options, _stop.Token, log);
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
                HoldRemainingMs = status.State == "losing" ? _hold.Remaining.TotalMilliseconds : 0,
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
    public long HandOver() =>
        _handover.Ask(() => _status is { State: "protected", Epoch: > 0 } ? null : $"replication is {_status.State}");

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
        _handover.Dispose();
    }

    private void Run()
    {
        using var ram = _machine.Memory.Lease();
        bool reprotecting = false;
        while (true)
        {
            var (toldStandby, why, handedOver, link) = Replicate(reprotecting);
            _epochsEnded = true;
            // Handed over, the standby knows, and the paused VM has nothing held past the final epoch's release.
            var end = _hold.Release(link, toldStandby || handedOver > 0,
                wait => _status = _status with { State = "losing", Reason = why });
            if (end == LostStandbyHold.End.StandbyAnsweredAgain)
            {
                reprotecting = true;
                _epochsEnded = false;
                _status = _status with { State = "connecting", Epoch = 0, Reason = null };
                continue;
            }
            _status = _status with { State = handedOver > 0 ? "handed-over" : "unprotected", Reason = why };
            if (handedOver > 0) _log.Info($"replication: VM handed over to {_options.Standby} at epoch {handedOver}; it stops here");
            else if (_machine.StopReason is null) _log.Warning($"replication to {_options.Standby} ended: {why}; the VM runs on here, unprotected");
            _protectedOrEnded.Set();
            _handover.End(handedOver, () => new ReplicationException($"the handover to {_options.Standby} failed: {why}; the VM runs on here, unprotected"));
            return;
        }
    }

    /// <summary>One replication stream, from the connection to its end: whether the standby knows it ended (and so will
    /// not resume the VM), why it ended, the epoch handed over (0: none), and the link it ran on (closed; null when
    /// none was made).</summary>
    private (bool ToldStandby, string? Why, long HandedOver, StandbyLink? Link) Replicate(bool reprotecting)
    {
        bool toldStandby = false;
        string? why = null;
        DirtyPageTracker? tracker = null;
        DiskCopySender? disks = null;
        StandbyLink? link = null;
        long handedOver = 0;
        try
        {
            link = StandbyLink.Connect(_options, _options.IoTimeout);
            // A VM that stops is not lost: the standby must hear so (an Abort), or it would fence this host and resume
            // the VM. The epoch loop notices the stop at once. During the first copy (long writes, a 30 s timeout) a send
            // still blocked after the grace is cut; from the epochs on, every send and read ends within the socket's
            // timeout, and cutting one that is merely slow (a loaded host) would turn a clean stop into a failover.
            using var cutOff = new Timer(_ => link.CloseAll());
            using var onVmStop = _machine.Stopping.Register(() => cutOff.Change(StoppedVmGrace, Timeout.InfiniteTimeSpan));
            link.Hello(_machine, _log);
            tracker = _machine.StartDirtyTracking();
            disks = new DiskCopySender(_machine.Disks);
            CopyEverything(link, tracker, disks);
            onVmStop.Dispose();
            link.TimeOutAsTheStandbyDoes();
            handedOver = RunEpochs(link, tracker, disks);
        }
        catch (Exception e)
        {
            why = _machine.StopReason is { } stop ? $"the VM stopped ({stop.Description})"
                : _stop.IsCancellationRequested ? "stopped on the primary"
                : e is VmmException ? e.Message
                : $"internal error in vmm: {e}";
            toldStandby = e is StandbyGaveUpException || (link?.TryAbort(why) ?? false);
            if (_status.Epoch == 0 && !reprotecting) _startFailure = new ReplicationException($"replication to {_options.Standby} failed: {why}", e);
        }
        finally
        {
            _staging.Clear();
            disks?.Dispose();
            if (tracker is not null) _machine.StopDirtyTracking(tracker);
            link?.Dispose();
        }
        return (toldStandby, why, handedOver, link);
    }

    /// <summary>The first full copy, while the guest runs: every disk extent that holds data, every page that may; then,
    /// still running, passes of what the guest changed meanwhile, each acknowledged by the standby (so each is paced by
    /// the link, not by socket buffers), until that stops shrinking. The first epoch, copied with the guest paused into
    /// memory, then holds only what changed since the last pass, not everything the guest wrote during the whole copy.
    /// The standby applies each pass in place: nothing of it is committed yet.</summary>
    private void CopyEverything(StandbyLink link, DirtyPageTracker tracker, DiskCopySender disks)
    {
        _status = _status with { State = "copying" };
        var copying = Stopwatch.StartNew();
        long diskBytes;
        long pages;
        var catchUp = new List<long>();
        using (var writer = new FrameWriter([link.Channel]))
        {
            diskBytes = disks.SendAllocated(writer);
            pages = PageFrames.Build(writer, _machine.Memory, DirtyPages.MayHoldData(_machine.Memory)).Pages;
            writer.Drain();
            link.EndPass(1);
            long previous = long.MaxValue;
            for (int pass = 2; pass <= 1 + MaxCatchUpPasses; pass++)
            {
                var dirty = tracker.Collect();
                long changed = dirty.Count + disks.CollectDirty() / MigrationChannel.PageSize;
                if (changed == 0) break;
                diskBytes += disks.SendPending(writer);
                PageFrames.Build(writer, _machine.Memory, dirty);
                writer.Drain();
                link.EndPass(pass);
                catchUp.Add(dirty.Count);
                // Done once what changed stops shrinking by a tenth: more passes would only chase the guest.
                if (changed > previous * 9 / 10) break;
                previous = changed;
            }
        }
        _log.Info($"replication: first full copy to {_options.Standby} in {copying.Elapsed.TotalMilliseconds:F0} ms ({pages} pages, {diskBytes >> 20} MiB of disk; " +
                  $"then pages changed meanwhile: {string.Join(", ", catchUp)})");
    }

    /// <summary>Runs epochs until replication fails (an exception) or the VM is handed over (the epoch it was
    /// handed over at).</summary>
    private long RunEpochs(StandbyLink link, DirtyPageTracker tracker, DiskCopySender disks)
    {
        var interval = TimeSpan.FromMilliseconds(_options.IntervalMs);
        var heartbeatEvery = link.FailoverTimeout / 3;
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
                int signalled = WaitHandle.WaitAny([_stop.Token.WaitHandle, _machine.Stopping.WaitHandle, _handover.Asked], wait < TimeSpan.Zero ? TimeSpan.Zero : wait);
                if (signalled == 2)
                {
                    HandOverFinalEpoch(link, tracker, disks, epoch + 1);
                    return epoch + 1;
                }
                if (signalled != WaitHandle.WaitTimeout) throw new ReplicationException("stopped");
                if (link.SinceHeard >= heartbeatEvery) link.Heartbeat();
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
                    link.Heartbeat();
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
            Commit(link, epoch, checkpoint);
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
    private void Commit(StandbyLink link, long epoch, EpochCheckpoint checkpoint)
    {
        link.Commit(_staging, checkpoint.State, epoch);
        _machine.Output.Release(epoch);
        Interlocked.Exchange(ref _lastCommittedCheckpointTicks, checkpoint.Ticks);
    }

    /// <summary>The final epoch of a handover: taken like any other, but the VM stays paused through its commit and
    /// the standby's answer to the Handover, and after it. The epoch lock stays held meanwhile, so nothing resumes it.</summary>
    private void HandOverFinalEpoch(StandbyLink link, DirtyPageTracker tracker, DiskCopySender disks, long epoch)
    {
        lock (_epochLock)
        {
            bool pausedBefore = _machine.IsPaused;
            _machine.Pause();
            try
            {
                var committing = Stopwatch.StartNew();
                var checkpoint = TakeCheckpoint(epoch, tracker, disks);
                Commit(link, epoch, checkpoint);
                _status = _status with
                {
                    Epoch = epoch, CommitLatencyMs = committing.Elapsed.TotalMilliseconds,
                    PagesLastEpoch = checkpoint.Pages, DiskBytesLastEpoch = checkpoint.DiskBytes,
                };
                link.HandOver(epoch);
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
}
