using System.Text.Json;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Replication;
using Vmm.Vm;

namespace Vmm.Control;

/// <summary>The VM's control socket: a unix socket taking one JSON request per line,
/// <c>{"command":"status"|"pause"|"resume"}</c>, <c>{"command":"snapshot","path":DIR}</c> or
/// <c>{"command":"migrate","to":"HOST:PORT","tlsDir":DIR,"connections":N,...}</c> (which first streams one <c>{"event":"pass",...}</c>
/// line per copy pass), <c>{"command":"replicate","to":"HOST:PORT"}</c> (or <c>"stop":true</c>, or <c>"handover":true</c>),
/// and answering one JSON line,
/// <c>{"ok":true,...}</c> or <c>{"ok":false,"error":"..."}</c>. Requests are hostile input: anything
/// malformed gets an error answer, never an exception in the VMM. Each request is a failure boundary: a
/// failure, a bug included, answers that request with an error and leaves the VM as it was. Pause, resume,
/// snapshot and migrate take turns: while one runs, the others are refused. The socket itself is a
/// <see cref="JsonLineServer"/>.</summary>
public sealed class ControlServer : IDisposable
{
    private readonly Machine _machine;
    private readonly Logger _log;
    private readonly JsonLineServer _server;
    /// <summary>The pause, resume, snapshot or migration in progress, or null.</summary>
    private string? _operation;
    /// <summary>The VM's replication to a standby, running or ended (its status stays visible), or null.</summary>
    private ReplicationSource? _replication;
    /// <summary>A migration whose Commit went out unconfirmed: the VM stays paused until its target is asked.</summary>
    private MigrationDoubt? _inDoubt;

    private ControlServer(Machine machine, string path, Logger log)
    {
        _machine = machine;
        _log = log;
        _server = JsonLineServer.Start(path, Handle, log, "control");
    }

    /// <summary>Listens at <paramref name="path"/>. A stale socket file (no one answering) is replaced; a
    /// live one is an error, so two VMs never share a control socket.</summary>
    public static ControlServer Start(Machine machine, string path, Logger log) => new(machine, path, log);

    /// <summary>Answers one request; public so tests can drive the protocol without a socket.</summary>
    public byte[] Handle(ReadOnlySpan<byte> request) => Handle(request, _ => { });

    /// <param name="progress">Writes an intermediate JSON line (a migration's passes) to the client.</param>
    private byte[] Handle(ReadOnlySpan<byte> request, Action<byte[]> progress)
    {
        if (JsonAnswers.Parse(request, out byte[] malformed) is not var (root, command)) return malformed;
        if (command == "status") return Status();
        if (command == "stop") return Stop();
        if (command is not ("pause" or "resume" or "snapshot" or "migrate" or "replicate"))
            return JsonAnswers.Error($"unknown command '{command}' (expected status, stop, pause, resume, snapshot, migrate or replicate)");
        // One at a time: a resume in the middle of a snapshot or a stop-and-copy would let the VM run here
        // while its memory is written out or its state goes to the target.
        string operation = command switch { "migrate" => "migration", "replicate" => JsonAnswers.Bool(root, "handover") ? "handover" : "replication start", _ => command };
        if (Interlocked.CompareExchange(ref _operation, operation, null) is { } running)
            return JsonAnswers.Error(running == "migration" && command == "migrate" ? "a migration is already running" : $"a {running} is running; {command} waits until it has ended");
        try
        {
            switch (command)
            {
                case "snapshot":
                    if (JsonAnswers.String(root, "path") is not { Length: > 0 } path) return JsonAnswers.Error("snapshot needs a \"path\": the directory to write");
                    Snapshot(path);
                    break;
                case "migrate" or "replicate" when _inDoubt is { } doubt:
                    return JsonAnswers.Error($"the VM is in doubt after its migration to {doubt.Target}; settle that first ('vmm ctl resume' asks the target)");
                case "migrate":
                    if (_replication is { IsLosing: true } losing) return JsonAnswers.Error(LosingRefusal(losing, "migrate"));
                    if (_replication is { IsActive: true }) return JsonAnswers.Error("the VM is replicated to a standby; stop that first (vmm ctl replicate --stop)");
                    return Migrate(root, progress);
                case "replicate":
                    return Replicate(root);
                case "pause":
                    using (_replication?.HoldEpochs()) _machine.Pause();
                    _log.Info("paused by the control socket");
                    break;
                case "resume":
                    if (_inDoubt is not null && SettleDoubt(JsonAnswers.Bool(root, "targetNotRunning")) is { } refusal) return refusal;
                    using (_replication?.HoldEpochs()) _machine.Resume();
                    _log.Info("resumed by the control socket");
                    break;
            }
        }
        catch (VmmException e)
        {
            return JsonAnswers.Error(e.Message);
        }
        finally
        {
            Volatile.Write(ref _operation, null);
        }
        return Status();
    }

    private byte[] Migrate(JsonElement root, Action<byte[]> progress)
    {
        if (JsonAnswers.String(root, "to") is not { Length: > 0 } target) return JsonAnswers.Error("migrate needs \"to\": the target's HOST:PORT");
        var options = new MigrationOptions
        {
            Target = target,
            DowntimeMs = JsonAnswers.Int(root, "downtimeMs") ?? 300,
            TimeoutS = JsonAnswers.Int(root, "timeoutS") ?? 0,
            MaxPasses = JsonAnswers.Int(root, "maxPasses") ?? 30,
            Force = JsonAnswers.Bool(root, "force"),
            AutoConverge = JsonAnswers.Bool(root, "autoConverge"),
            CopyDisks = JsonAnswers.Bool(root, "copyDisks"),
            TlsDirectory = JsonAnswers.String(root, "tlsDir"),
            Connections = JsonAnswers.Int(root, "connections") ?? 1,
        };
        if (options.DowntimeMs < 0 || options.TimeoutS < 0 || options.MaxPasses < 1)
            return JsonAnswers.Error("downtimeMs and timeoutS must not be negative, maxPasses at least 1");
        if (options.Connections is < 1 or > MigrationHello.MaxConnections)
            return JsonAnswers.Error($"connections must be 1 to {MigrationHello.MaxConnections}");
        try
        {
            _log.Info($"migrating to {target} (downtime limit {options.DowntimeMs} ms{(options.TimeoutS > 0 ? $", timeout {options.TimeoutS} s" : "")}{(options.AutoConverge ? ", auto-converge" : "")}{(options.CopyDisks ? ", copying the disks" : "")}{(options.TlsDirectory is { } tls ? $", mutual TLS with {tls}" : "")}{(options.Connections > 1 ? $", {options.Connections} connections" : "")})");
            var report = MigrationSource.Migrate(_machine, options, pass =>
            {
                _log.Info($"migration {pass}");
                TryWrite(progress, JsonAnswers.Json(writer =>
                {
                    writer.WriteString("event", "pass");
                    writer.WriteNumber("pass", pass.Number);
                    writer.WriteNumber("pagesSent", pass.PagesSent);
                    writer.WriteNumber("zeroPages", pass.ZeroPages);
                    writer.WriteNumber("mibSent", Math.Round(pass.BytesSent / 1048576.0, 2));
                    writer.WriteNumber("ms", Math.Round(pass.Seconds * 1000, 1));
                    writer.WriteNumber("bandwidthMiBps", Math.Round(pass.BandwidthMiBps, 1));
                    writer.WriteNumber("dirtyPages", pass.DirtyPagesAfter);
                    writer.WriteNumber("dirtyRateMiBps", Math.Round(pass.DirtyRateMiBps, 1));
                    writer.WriteNumber("estimatedDowntimeMs", Math.Round(pass.EstimatedDowntimeMs, 1));
                    writer.WriteNumber("throttlePercent", pass.ThrottlePercent);
                    if (options.CopyDisks)
                    {
                        writer.WriteNumber("diskMiBSent", Math.Round(pass.DiskBytesSent / 1048576.0, 2));
                        writer.WriteNumber("dirtyDiskBytes", pass.DirtyDiskBytesAfter);
                    }
                }));
            }, _log);
            _log.Info(report.ToString());
            // At once, not once the answer is written: a client that went away must not leave a copy here to resume.
            // The process ends only after the answer is written (disposing this server waits for it).
            _machine.RequestStop(VmStop.Migrated(target));
            return JsonAnswers.Json(writer =>
            {
                writer.WriteBoolean("ok", true);
                writer.WriteString("state", "migrated");
                writer.WriteString("target", target);
                writer.WriteNumber("passes", report.Passes);
                writer.WriteNumber("totalMs", Math.Round(report.TotalMs, 1));
                writer.WriteNumber("downtimeMs", Math.Round(report.DowntimeMs, 1));
                writer.WriteNumber("mibSent", Math.Round(report.TotalBytes / 1048576.0, 2));
                writer.WriteNumber("pagesSent", report.PagesSent);
                writer.WriteBoolean("forced", report.Forced);
                if (options.CopyDisks) writer.WriteNumber("diskMiBSent", Math.Round(report.DiskBytes / 1048576.0, 2));
            });
        }
        catch (MigrationException e)
        {
            _log.Error(e.Message);
            if (e.Doubt is not { } doubt) return JsonAnswers.Error(e.Message);
            _inDoubt = doubt;
            return JsonAnswers.Json(writer =>
            {
                writer.WriteBoolean("ok", false);
                writer.WriteString("error", e.Message);
                writer.WriteString("state", "in-doubt");
                writer.WriteString("target", doubt.Target);
            });
        }
    }

    /// <summary>Before a resume of a VM in doubt: asks its target what became of the migration. Returns null when the
    /// VM may run here (the target discarded it, or the operator says it does not run there), or the answer to give:
    /// the VM runs there (and this copy is stopped), or nobody can say yet.</summary>
    private byte[]? SettleDoubt(bool targetNotRunning)
    {
        var doubt = _inDoubt!;
        if (targetNotRunning)
        {
            _log.Warning($"resuming a VM in doubt after its migration to {doubt.Target}: the operator says the target does not run it");
            _inDoubt = null;
            return null;
        }
        var outcome = doubt.Ask(_log, out string why);
        _log.Info($"asked what became of the migration to {doubt.Target}: {why}");
        switch (outcome)
        {
            case MigrationOutcome.Discarded:
                _inDoubt = null;
                return null;
            case MigrationOutcome.Committed:
                _machine.RequestStop(VmStop.Migrated(doubt.Target));
                return JsonAnswers.Error($"not resumed: {why}; this paused copy is stopped");
            default:
                return JsonAnswers.Error($"not resumed: the VM is in doubt after its migration to {doubt.Target}, and {why}. " +
                    "If you know the target does not run it, 'vmm ctl resume --target-not-running' resumes it here");
        }
    }

    /// <summary>Starts replicating to a standby and answers once the VM is protected (the first epoch committed
    /// there), or why it is not; with <c>"stop":true</c>, ends the replication running; with <c>"handover":true</c>,
    /// hands the VM over to the standby and stops it here once the answer is written.</summary>
    private byte[] Replicate(JsonElement root)
    {
        if (JsonAnswers.Bool(root, "handover"))
        {
            if (_replication is not { IsActive: true } replicated) return JsonAnswers.Error("the VM is not being replicated: there is nothing to hand over");
            _log.Info($"handing the VM over to the standby {replicated.Status.Standby}");
            long epoch = replicated.HandOver();
            _machine.RequestStop(VmStop.HandedOver(replicated.Status.Standby));
            return JsonAnswers.Json(writer =>
            {
                writer.WriteBoolean("ok", true);
                writer.WriteString("state", "handed-over");
                writer.WriteString("standby", replicated.Status.Standby);
                writer.WriteNumber("epoch", epoch);
            });
        }
        if (JsonAnswers.Bool(root, "stop"))
        {
            if (_replication is not { IsActive: true } running) return JsonAnswers.Error("the VM is not being replicated");
            running.Stop();
            _log.Info("replication stopped by the control socket");
            return Status();
        }
        if (_replication is { IsLosing: true } losing) return JsonAnswers.Error(LosingRefusal(losing, "replicate"));
        if (_replication is { IsActive: true }) return JsonAnswers.Error($"the VM is replicated to {_replication.Status.Standby} already");
        if (JsonAnswers.String(root, "to") is not { Length: > 0 } standby) return JsonAnswers.Error("replicate needs \"to\": the standby's HOST:PORT");
        var options = new ReplicationOptions
        {
            Standby = standby,
            IntervalMs = JsonAnswers.Int(root, "intervalMs") ?? 100,
            TlsDirectory = JsonAnswers.String(root, "tlsDir"),
        };
        _log.Info($"replicating to {standby} (epochs of {options.IntervalMs} ms{(options.TlsDirectory is { } tls ? $", mutual TLS with {tls}" : "")})");
        _replication?.Dispose();
        var replication = _replication = ReplicationSource.Start(_machine, options, _log);
        // "noWait": the first full copy of a large VM may take longer than the caller can wait; status follows it.
        if (!JsonAnswers.Bool(root, "noWait")) replication.WaitUntilProtected();
        return Status();
    }

    /// <summary>Why the VM may not move or get a new standby yet: its lost standby may still take over, and until then
    /// (the hold of its output) a second copy elsewhere could run beside the one it would resume.</summary>
    private static string LosingRefusal(ReplicationSource losing, string command)
    {
        var status = losing.Status;
        return $"the VM's standby {status.Standby} was lost ({status.Reason}) and may still take over for {status.HoldRemainingMs:F0} ms more " +
               $"(the guest's output is held until then); {command} again after that";
    }

    /// <summary>A client that stopped reading progress must not fail the migration itself.</summary>
    private static void TryWrite(Action<byte[]> write, byte[] line)
    {
        try { write(line); }
        catch (Exception e) when (e is IOException or ObjectDisposedException) { }
    }

    /// <summary>Pauses a running VM for as long as the snapshot takes (a paused one stays paused).</summary>
    private void Snapshot(string path)
    {
        // Epochs wait meanwhile: one ending in the middle would resume the VM under the snapshot.
        using var epochs = _replication?.HoldEpochs();
        bool wasPaused = _machine.IsPaused;
        _machine.Pause();
        var started = DateTime.UtcNow;
        try
        {
            Vmm.Snapshot.SnapshotDirectory.Write(_machine, path);
        }
        finally
        {
            if (!wasPaused) _machine.Resume();
        }
        _log.Info($"snapshot written to {path} in {(DateTime.UtcNow - started).TotalMilliseconds:F0} ms");
    }

    /// <summary>Asks the VM to stop, for it alone: a VM received by a migrate-receive daemon shares that process with others,
    /// so a signal is no way to stop it. Answers at once, with the state "stopping";
    /// the VM then stops as on SIGTERM, but ends with exit code 0 (a requested stop, like Ctrl-A x).</summary>
    private byte[] Stop()
    {
        _log.Info("stop requested on the control socket");
        _machine.RequestStop(VmStop.Requested("the control socket"));
        return Status();
    }

    private byte[] Status() => JsonAnswers.Json(writer =>
    {
        writer.WriteBoolean("ok", true);
        writer.WriteString("name", _machine.Config.Name);
        var doubt = _inDoubt;
        writer.WriteString("state", _machine.StopReason is not null ? "stopping" : Volatile.Read(ref _operation) == "migration" ? "migrating"
            : doubt is not null ? "in-doubt" : _machine.IsPaused ? "paused" : "running");
        if (doubt is not null)
        {
            writer.WriteStartObject("inDoubt");
            writer.WriteString("target", doubt.Target);
            writer.WriteString("reason", doubt.Reason);
            writer.WriteEndObject();
        }
        writer.WriteNumber("vcpus", _machine.VcpuCount);
        writer.WriteNumber("memoryBytes", _machine.Memory.TotalBytes);
        writer.WriteNumber("uptimeMs", (long)_machine.Uptime.TotalMilliseconds);
        if (_replication?.Status is { } replication)
        {
            writer.WriteStartObject("replication");
            writer.WriteString("state", replication.State);
            writer.WriteString("standby", replication.Standby);
            writer.WriteNumber("epoch", replication.Epoch);
            writer.WriteNumber("intervalMs", replication.IntervalMs);
            writer.WriteNumber("pauseMs", Math.Round(replication.PauseMs, 2));
            writer.WriteNumber("commitLatencyMs", Math.Round(replication.CommitLatencyMs, 2));
            writer.WriteNumber("pagesLastEpoch", replication.PagesLastEpoch);
            writer.WriteNumber("diskBytesLastEpoch", replication.DiskBytesLastEpoch);
            writer.WriteNumber("outputHeldBytes", replication.OutputHeldBytes);
            writer.WriteNumber("outputDroppedBytes", replication.OutputDroppedBytes);
            writer.WriteNumber("outputDelayAverageMs", Math.Round(replication.OutputDelayAverageMs, 2));
            writer.WriteNumber("outputDelayMaxMs", Math.Round(replication.OutputDelayMaxMs, 2));
            writer.WriteNumber("lagMs", Math.Round(replication.LagMs, 1));
            if (replication.State == "losing") writer.WriteNumber("holdRemainingMs", Math.Round(replication.HoldRemainingMs));
            if (replication.Reason is { } reason) writer.WriteString("reason", reason);
            writer.WriteEndObject();
        }
    });

    /// <summary>Stops taking requests and returns once none is being served: a snapshot or migration in progress
    /// (which ends promptly when the VM has stopped) finishes before the caller releases the machine.</summary>
    public void Dispose()
    {
        _server.Dispose();
        _replication?.Dispose();
    }
}
