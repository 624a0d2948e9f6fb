using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Serialization;
using Vmm.State;
using Vmm.Vm;

namespace Vmm.Migration;

/// <summary>Precopy live migration of a running machine to a <c>vmm migrate-receive</c> target: one full
/// pass over RAM while the guest runs, passes of the pages it dirtied until the rest fits in the downtime
/// limit, then pause, the last pages, disk flush and the device and vCPU state. With
/// <see cref="MigrationOptions.CopyDisks"/> the disk images travel too, pass by pass with RAM
/// (<see cref="DiskCopySender"/>), and count towards the downtime estimate.
/// <para>The invariant: at no instant do two copies of the VM run guest code. The target answers the state with
/// Prepared and resumes only on the source's Commit, the point of no return. Any failure before the Commit resumes the
/// VM here (the target discards its copy); once the Commit is sent, the VM is never resumed here by the source: with
/// Resumed it stops, and without it stays paused, in doubt (<see cref="MigrationException.Doubt"/>).</para> A migration is a
/// failure boundary: whatever goes wrong, a bug included, ends the migration, never the VM. When the VM
/// itself stops meanwhile (the guest powers off, a signal), the migration ends at once and says so. The
/// connection is plain TCP, or mutual TLS with <see cref="MigrationOptions.TlsDirectory"/> (see <see cref="MigrationTls"/>).
/// With <see cref="MigrationOptions.Connections"/> above one, the built frames of each pass go out over that many
/// connections in turn (<see cref="OutgoingConnections"/>); the state and the answers travel on the first.</summary>
public sealed class MigrationSource
{
    private const int InitialThrottlePercent = 20, ThrottleStepPercent = 10;

    private readonly Machine _machine;
    private readonly MigrationOptions _options;
    private readonly Action<MigrationPass> _onPass;
    private readonly Logger _log;
    private readonly GuestMemory _memory;
    private FrameWriter? _writer;
    private long _pagesSent;

    private MigrationSource(Machine machine, MigrationOptions options, Action<MigrationPass> onPass, Logger log)
    {
        _machine = machine;
        _options = options;
        _onPass = onPass;
        _log = log;
        _memory = machine.Memory;
    }

    /// <summary>Migrates <paramref name="machine"/>; on success the VM runs on the target and the caller
    /// stops it here. On failure a <see cref="MigrationException"/> says why, and the VM runs here as before.</summary>
    public static MigrationReport Migrate(Machine machine, MigrationOptions options, Action<MigrationPass> onPass, Logger log) =>
        new MigrationSource(machine, options, onPass, log).Run();

    private MigrationReport Run()
    {
        var total = Stopwatch.StartNew();
        bool wasPaused = _machine.IsPaused;
        bool pausedHere = false;
        if (!TryParseEndpoint(_options.Target, out string host, out int port))
            throw new MigrationException($"'{_options.Target}' is not HOST:PORT");
        if (_options.Connections is < 1 or > MigrationHello.MaxConnections)
            throw new MigrationException($"{_options.Connections} connections: a migration takes 1 to {MigrationHello.MaxConnections}");
        using var tls = LoadTls();
        // RAM stays mapped while pages are read from it, even if the VM ends meanwhile.
        using var ram = _memory.Lease();
        using var connections = new OutgoingConnections(host, port, _options.Target, _options.IoTimeout, tls);
        // A VM that stops ends its migration: closing the sockets ends a send or receive that blocks.
        using var onVmStop = _machine.Stopping.Register(connections.CloseAll);
        bool timedOut = false, committing = false;
        var commitGate = new object();
        // Without --force the time limit is hard: closing the sockets ends a write (or a TLS handshake) that blocks.
        // It ends nothing past the Commit, which it would only turn into a doubt.
        using var deadline = _options.TimeoutS > 0 && !_options.Force
            ? new Timer(_ =>
            {
                lock (commitGate)
                {
                    if (committing) return;
                    timedOut = true;
                }
                connections.CloseAll();
            }, null, TimeSpan.FromSeconds(_options.TimeoutS), Timeout.InfiniteTimeSpan)
            : null;
        MigrationHello? hello = null;
        MigrationChannel? channel = null;
        FrameWriter? writer = null;
        DirtyPageTracker? tracker = null;
        DiskCopySender? disks = null;
        try
        {
            channel = connections.OpenMain(_log);
            (hello, var token) = SendHello(channel);
            if (_options.Connections > 1) connections.Join(token, _options.Connections);
            _writer = writer = new FrameWriter(connections.Channels);
            tracker = _machine.StartDirtyTracking();
            if (_options.CopyDisks) disks = new DiskCopySender(_machine.Disks);
            _log.Debug($"migration: dirty pages tracked with the {(tracker.UsesDirtyRing ? "dirty ring" : tracker.ManualProtect ? "dirty log (manual protect)" : "dirty log")}");

            var pending = DirtyPages.MayHoldData(_memory);
            double bandwidthBytesPerSecond = 0;
            long previousDirty = long.MaxValue;
            var sinceCollect = Stopwatch.StartNew();
            bool forced = false;
            int pass = 0;
            while (true)
            {
                pass++;
                var passTime = Stopwatch.StartNew();
                long bytesBefore = connections.BytesSent;
                var timesBefore = SendTimes(connections, writer);
                long diskBytes = disks is null ? 0 : pass == 1 ? disks.SendAllocated(writer) : disks.SendPending(writer);
                var (pages, zeroPages) = SendPages(pending);
                double builtMs = passTime.Elapsed.TotalMilliseconds;
                connections.EndPass(pass);
                double seconds = passTime.Elapsed.TotalSeconds;
                LogPassTimes(pass, seconds * 1000, builtMs, timesBefore, SendTimes(connections, writer));
                long passBytes = connections.BytesSent - bytesBefore;
                if (passBytes >= (1 << 20) || bandwidthBytesPerSecond == 0)
                    bandwidthBytesPerSecond = passBytes / Math.Max(seconds, 1e-6);

                double collectSeconds = sinceCollect.Elapsed.TotalSeconds;
                pending = tracker.Collect();
                long dirtyDiskBytes = disks?.CollectDirty() ?? 0;
                sinceCollect.Restart();
                long dirty = pending.Count;
                double estimatedDowntimeMs = (dirty * (double)MigrationChannel.PageSize + dirtyDiskBytes) / bandwidthBytesPerSecond * 1000;
                _onPass(new MigrationPass(pass, pages, zeroPages, passBytes, seconds, bandwidthBytesPerSecond / 1048576,
                    dirty, dirty * (double)MigrationChannel.PageSize / 1048576 / Math.Max(collectSeconds, 1e-6), estimatedDowntimeMs, _machine.ThrottlePercent,
                    diskBytes, dirtyDiskBytes));

                if (estimatedDowntimeMs <= _options.DowntimeMs) break;
                bool outOfPasses = pass >= _options.MaxPasses;
                bool outOfTime = _options.TimeoutS > 0 && total.Elapsed.TotalSeconds >= _options.TimeoutS;
                if (outOfPasses || outOfTime)
                {
                    string limit = outOfPasses ? $"{_options.MaxPasses} passes" : $"{_options.TimeoutS} s";
                    if (!_options.Force)
                        throw new MigrationException($"did not converge within {limit}: {dirty} pages{(disks is null ? "" : $" and {dirtyDiskBytes >> 10} KiB of disk")} still dirty, estimated downtime {estimatedDowntimeMs:F0} ms > {_options.DowntimeMs} ms (--force copies anyway, --auto-converge slows the guest)");
                    _log.Warning($"migration: {limit} reached; copying the last {dirty} pages{(disks is null ? "" : $" and {dirtyDiskBytes >> 10} KiB of disk")} with the VM paused (--force)");
                    forced = true;
                    break;
                }
                if (_options.AutoConverge && dirty > previousDirty * 9 / 10)
                    _machine.ThrottlePercent = _machine.ThrottlePercent == 0 ? InitialThrottlePercent : _machine.ThrottlePercent + ThrottleStepPercent;
                previousDirty = dirty;
            }

            // Stop and copy.
            var downtime = Stopwatch.StartNew();
            _machine.Pause();
            pausedHere = !wasPaused;
            double pausedMs = downtime.Elapsed.TotalMilliseconds;
            pending.UnionWith(tracker.Collect());
            // The device thread is parked: what the guest wrote to its disks is all marked now.
            long finalDiskBytes = 0;
            if (disks is not null)
            {
                disks.CollectDirty();
                finalDiskBytes = disks.SendPending(writer);
            }
            var (finalPages, _) = SendPages(pending);
            // The state goes on the first connection: the others must have landed all they carried before it.
            if (connections.Channels.Count > 1) connections.EndPass(pass + 1);
            double pagesMs = downtime.Elapsed.TotalMilliseconds;
            MachinePersistence.FlushDevices(_machine);
            MachineState state = MachinePersistence.Save(_machine);
            // Stopped (a signal, say) while paused: the user wants it stopped, not running on elsewhere.
            if (_machine.StopReason is { } stopped) throw new VmOperationException($"the VM stopped ({stopped.Description})");
            channel.Send(MigrationFrameType.State, state.ToBytes());
            channel.Flush();
            double stateMs = downtime.Elapsed.TotalMilliseconds;
            connections.MainSocket.ReceiveTimeout = (int)_options.ConfirmTimeout.TotalMilliseconds;
            OutgoingConnections.ExpectFrame(channel, MigrationFrameType.Prepared, "the target did not take the VM's state");
            double preparedMs = downtime.Elapsed.TotalMilliseconds;
            lock (commitGate)
            {
                if (timedOut) throw new MigrationException("timed out");
                committing = true;
            }
            channel.Send(MigrationFrameType.Commit, []);
            channel.Flush();
            OutgoingConnections.ExpectFrame(channel, MigrationFrameType.Resumed, "the target did not confirm that the VM runs there");
            downtime.Stop();
            _machine.StopDirtyTracking(tracker);
            if (tracker.UsesDirtyRing) _log.Debug($"migration: vCPUs found their dirty ring full {_machine.DirtyRingFullExits} times so far");
            _log.Info($"migration: downtime {downtime.Elapsed.TotalMilliseconds:F1} ms = pause {pausedMs:F1} + last {finalPages} pages{(disks is null ? "" : $" and {finalDiskBytes >> 10} KiB of disk")} {pagesMs - pausedMs:F1} + " +
                      $"disk flush and state {stateMs - pagesMs:F1} + target restore {preparedMs - stateMs:F1} + commit, resume and confirmation {downtime.Elapsed.TotalMilliseconds - preparedMs:F1}");
            return new MigrationReport(_options.Target, pass + 1, connections.BytesSent, _pagesSent, total.Elapsed.TotalMilliseconds,
                downtime.Elapsed.TotalMilliseconds, forced, disks?.BytesSent ?? 0);
        }
        catch (Exception e) when (Volatile.Read(ref committing) && _machine.StopReason is null)
        {
            // Past the point of no return: the target may run the VM, so this copy must not.
            string why = e is VmmException ? e.Message : $"internal error in vmm: {e}";
            var doubt = new MigrationDoubt(_options.Target, new MigrationLocate(hello!.MigrationId, hello.Name), _options.TlsDirectory, why);
            _log.Error($"migration to {_options.Target}: the Commit went out and no confirmation came back ({why}); the VM stays paused here, in doubt");
            throw new MigrationException($"migration to {_options.Target} is in doubt: the Commit went out and the target did not confirm ({why}); " +
                "the VM stays paused here, as the target may run it: 'vmm ctl resume' asks the target, and resumes here only if it never ran the VM there", e) { Doubt = doubt };
        }
        catch (Exception e)
        {
            // The channel is this thread's again once the writer has stopped.
            writer?.Dispose();
            string why = _machine.StopReason is { } stop ? $"the VM stopped during the migration ({stop.Description})"
                : timedOut ? $"timed out after {_options.TimeoutS} s"
                : e is MigrationException { InnerException: IOException or SocketException } && channel is not null && connections.TargetsLastWord() is { } refusal ? $"the target refused: {refusal}"
                : e is VmmException ? e.Message
                : $"internal error in vmm: {e}";
            try
            {
                channel?.SendText(MigrationFrameType.Abort, why);
                channel?.Flush();
            }
            catch (MigrationException)
            {
                // The target is gone or the connection is closed: it discards what it has on its own.
            }
            if (pausedHere) _machine.Resume();
            throw new MigrationException($"migration to {_options.Target} failed: {why}{(_machine.StopReason is null ? "; the VM keeps running here" : "")}", e);
        }
        finally
        {
            _machine.ThrottlePercent = 0;
            disks?.Dispose();
            if (tracker is not null) _machine.StopDirtyTracking(tracker);
            writer?.Dispose();
        }
    }

    /// <summary>The TLS files named by the request; a file that will not do fails the migration before it starts.</summary>
    private MigrationTls? LoadTls()
    {
        try
        {
            return _options.TlsDirectory is { } directory ? MigrationTls.Load(directory) : null;
        }
        catch (ConfigurationException e)
        {
            throw new MigrationException($"migration to {_options.Target} failed: {e.Message}; the VM keeps running here", e);
        }
    }

    /// <summary>Sends the Hello; returns it, and the token further connections join with (with several).</summary>
    private (MigrationHello, UInt128) SendHello(MigrationChannel channel)
    {
        // The CPUID the guest was shown goes along, so a target that cannot offer it refuses now, before the pause.
        var description = MachineDescription.Of(_machine.Config) with { VcpuCpuid = _machine.VcpuCpuid };
        var hello = new MigrationHello(_machine.Config.Name, description, _options.CopyDisks ? _machine.Disks.Select(d => d.CapacityBytes).ToArray() : null, _options.Connections);
        channel.Send(MigrationFrameType.Hello, hello.ToBytes());
        channel.Flush();
        var ready = OutgoingConnections.ExpectFrame(channel, MigrationFrameType.Ready, "the target did not accept the VM");
        return (hello, _options.Connections > 1 ? MigrationJoin.ReadToken(ready) : 0);
    }

    /// <summary>The source's times so far, in <see cref="Stopwatch"/> ticks: the migration thread's waits for a free
    /// buffer, and the writer threads' checksums and socket writes (summed over the connections).</summary>
    private readonly record struct SendTimesSoFar(long RentWaitTicks, long ChecksumTicks, long SocketTicks);

    private static SendTimesSoFar SendTimes(OutgoingConnections connections, FrameWriter writer) =>
        new(writer.RentWaitTicks, connections.Channels.Sum(c => c.ChecksumTicks), connections.Channels.Sum(c => c.SocketTicks));

    /// <summary>Where a pass's time went (debug log): what bounds a migration's speed on this host is the side that
    /// did not wait.</summary>
    private void LogPassTimes(int pass, double passMs, double builtMs, SendTimesSoFar before, SendTimesSoFar after)
    {
        static double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
        double waitedMs = Ms(after.RentWaitTicks - before.RentWaitTicks);
        _log.Debug($"migration pass {pass} took {passMs:F0} ms: the migration thread read guest RAM (and disks) into frames for {builtMs - waitedMs:F0} ms " +
                   $"and waited {waitedMs:F0} ms for the writer{(_options.Connections > 1 ? "s" : "")}, which spent {Ms(after.ChecksumTicks - before.ChecksumTicks):F0} ms on checksums " +
                   $"and {Ms(after.SocketTicks - before.SocketTicks):F0} ms in socket writes; the pass's end took {passMs - builtMs:F0} ms (the last frames out, the target's answer)");
    }

    /// <summary>Sends the pages (see <see cref="PageFrames"/>): frames are built here and sent by the
    /// <see cref="FrameWriter"/> meanwhile; this returns once all are sent, so the caller may use the channel again.</summary>
    private (long Pages, long ZeroPages) SendPages(DirtyPages pages)
    {
        var counts = PageFrames.Build(_writer!, _memory, pages);
        _writer!.Drain();
        _pagesSent += counts.Pages;
        return counts;
    }

    /// <summary>HOST:PORT, with [IPv6]:PORT.</summary>
    public static bool TryParseEndpoint(string text, out string host, out int port, bool allowPortZero = false)
    {
        host = "";
        port = 0;
        int colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out port)
            || port < (allowPortZero ? 0 : 1) || port > 65535) return false;
        host = text[..colon].Trim('[', ']');
        return host.Length > 0;
    }
}
