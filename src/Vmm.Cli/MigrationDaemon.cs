using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Vmm.Control;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.State;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary>The migration target daemon behind <c>vmm migrate-receive</c>. Each connection is received on its
/// own thread, up to <c>--max-incoming</c> migrations at a time; a peer that has not sent a valid Hello (or Join,
/// for one more connection of a migration under way) within <see cref="HelloDeadline"/> is dropped, so a silent or
/// slow connection holds no one up, and at most <see cref="MaxAwaitingFirstFrame"/> per migration slot wait for theirs. Each VM that
/// arrives runs in this process on its own threads. Every incoming migration is a failure boundary: whatever
/// goes wrong in one (a hostile stream, a bug) discards that one and is logged; the daemon, its other
/// migrations and the VMs it runs go on. VMs are known here by the name they travel with: at most one of each
/// name, and <c>{name}</c> in --api-socket and --serial-log puts it in their paths. With --control-socket, the
/// daemon answers <c>{"command":"list"}</c> with the VMs it runs.</summary>
internal sealed class MigrationDaemon(MigrateReceiveOptions options, TcpListener listener, MigrationTls? tls, Logger log)
{
    public static readonly TimeSpan HelloDeadline = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan SourceSilenceLimit = TimeSpan.FromSeconds(60);
    /// <summary>Per --max-incoming slot, the connections that may wait for their first frame at once: every further
    /// connection of a migration, as many as it may have, and no more threads than that for silent peers.</summary>
    private const int MaxAwaitingFirstFrame = MigrationHello.MaxConnections;

    private readonly MigrationJoins _joins = new();
    private readonly MigrationOutcomes _outcomes = new();
    private int _awaitingFirstFrame;
    private readonly ConnectionRefusals _refusals = new();
    private readonly List<ReceivedVm> _running = [];
    /// <summary>The names of the VMs running here or arriving (guarded by <see cref="_running"/>).</summary>
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly List<Task> _finishing = [];
    private readonly List<Socket> _incoming = [];
    private readonly CountdownEvent _receiving = new(1);
    private int _freeSlots = options.MaxIncoming;
    private int? _signal;
    private int _onceClaimed;
    private bool _stopListening;
    /// <summary>With --once: the exit code of the VM that came in, or null while none has ended.</summary>
    private int? _onceExitCode;

    public int Run()
    {
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => OnSignal(c, 2));
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => OnSignal(c, 15));
        using var control = options.ControlSocket is null ? null : StartSocket("--control-socket", options.ControlSocket,
            path => JsonLineServer.Start(path, (request, _) => HandleControl(request), log, "daemon-control"));
        log.Info($"waiting for migrations on {listener.LocalEndpoint} ({(tls is null ? "plain TCP" : $"mutual TLS with {options.TlsDir}")})");
        try
        {
            for (int n = 1; ; n++)
            {
                Socket connection;
                try
                {
                    connection = listener.AcceptSocket();
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException)
                {
                    if (Volatile.Read(ref _stopListening)) break;
                    // Out of file descriptors, a connection aborted before it was taken: the next one may do.
                    log.Warning($"accepting a migration failed ({e.Message}); still listening");
                    Thread.Sleep(100);
                    continue;
                }
                try
                {
                    Admit(connection, n);
                }
                catch (Exception e)
                {
                    // The accept loop is a failure boundary too: one connection it could not take in ends only that one.
                    log.Error($"migration {n} could not be taken in: {(e is VmmException ? e.Message : $"internal error in vmm: {e}")}");
                    connection.Dispose();
                }
            }
        }
        finally
        {
            listener.Stop();
            _receiving.Signal();
            _receiving.Wait();
        }
        // Every VM here runs to its end (a signal stops them all); each is logged and released before the exit.
        Task[] finishing;
        lock (_running) finishing = [.. _finishing];
        Task.WaitAll(finishing);
        if (options.Once && Volatile.Read(ref _onceClaimed) == 1) return _onceExitCode ?? ExitCodes.VmmError;
        return _signal is { } s ? ExitCodes.Signal(s) : options.Once ? ExitCodes.VmmError : ExitCodes.GuestFinished;
    }

    private void OnSignal(PosixSignalContext context, int number)
    {
        context.Cancel = true;
        _signal = number;
        // The VMs first, then the migrations still coming in, then the listener, which ends the accept loop.
        lock (_running)
            foreach (var vm in _running) vm.Machine.RequestStop(VmStop.BySignal(context.Signal.ToString(), number));
        lock (_incoming)
            foreach (var connection in _incoming) connection.Dispose();
        StopListening();
    }

    private void StopListening()
    {
        Volatile.Write(ref _stopListening, true);
        listener.Stop();
    }

    /// <summary>Starts receiving on its own thread, or tells the source the target is busy.</summary>
    private void Admit(Socket connection, int n)
    {
        string source = connection.RemoteEndPoint?.ToString() ?? "?";
        if (Interlocked.Increment(ref _awaitingFirstFrame) > options.MaxIncoming * MaxAwaitingFirstFrame)
        {
            Interlocked.Decrement(ref _awaitingFirstFrame);
            log.Warning($"connection {n} from {source} refused: {options.MaxIncoming * MaxAwaitingFirstFrame} connections are already waiting for their first frame");
            _refusals.Refuse(connection, "the target is busy: connections are waiting to begin; try again");
            return;
        }
        lock (_incoming) _incoming.Add(connection);
        _receiving.AddCount();
        new Thread(() =>
        {
            var slot = new MigrationSlot(this);
            try
            {
                ReceiveOne(connection, n, source, slot);
            }
            finally
            {
                lock (_incoming) _incoming.Remove(connection);
                slot.FirstFrameRead();
                ConnectionRefusals.CloseLeavingTheLastWord(connection);
                slot.Release();
                _receiving.Signal();
            }
        }) { Name = $"migration-{n}", IsBackground = true }.Start();
    }

    /// <summary>What one connection holds of the daemon's limits: a place among those waiting for their first frame
    /// until it is read, and, once it is a Hello, one of the --max-incoming migration slots.</summary>
    private sealed class MigrationSlot(MigrationDaemon daemon)
    {
        private bool _awaiting = true, _claimed;

        public void FirstFrameRead()
        {
            if (!_awaiting) return;
            _awaiting = false;
            Interlocked.Decrement(ref daemon._awaitingFirstFrame);
        }

        public bool TryClaim()
        {
            FirstFrameRead();
            if (Interlocked.Decrement(ref daemon._freeSlots) >= 0) return _claimed = true;
            Interlocked.Increment(ref daemon._freeSlots);
            return false;
        }

        public void Release()
        {
            if (_claimed) Interlocked.Increment(ref daemon._freeSlots);
            _claimed = false;
        }
    }

    /// <summary>One incoming migration, from the Hello to a running VM (or its discarding).</summary>
    private void ReceiveOne(Socket connection, int n, string source, MigrationSlot slot)
    {
        log.Info($"migration {n}: connection from {source}");
        connection.NoDelay = true;
        connection.ReceiveBufferSize = 4 << 20;
        connection.ReceiveTimeout = connection.SendTimeout = (int)SourceSilenceLimit.TotalMilliseconds;
        bool helloLate = false;
        // The TLS handshake and a whole Hello (or Join) within the deadline, however slowly their bytes come: closing the
        // socket ends the read.
        using var helloDeadline = new Timer(_ => { helloLate = true; connection.Dispose(); }, null, HelloDeadline, Timeout.InfiniteTimeSpan);
        Stream? stream = null;
        bool claimedOnce = false;
        string? name = null;
        Stream? serialLog = null;
        MachineDestination? destination = null;
        ControlServer? control = null;
        var started = Stopwatch.StartNew();
        try
        {
            stream = IncomingMigrationStream.Open(connection, tls);
            if (stream is SslStream session) log.Info($"migration {n}: mutual TLS ({session.SslProtocol}) with {session.RemoteCertificate?.Subject}");
            var receiver = new MigrationReceiver(stream, log, options.DiskDirs.FirstOrDefault() is { } copyInto ? Path.GetFullPath(copyInto) : null, _joins, connection, _outcomes);
            bool hello = receiver.ReadHelloOrServeJoin(index =>
            {
                helloDeadline.Change(Timeout.Infinite, Timeout.Infinite);
                slot.FirstFrameRead();
                log.Info($"migration {n}: connection {index} of a migration under way");
            });
            if (!hello)
            {
                log.Debug($"migration {n}: that connection's part is done (a further connection, or a question)");
                return;
            }
            if (!slot.TryClaim())
            {
                log.Warning($"migration {n} from {source} refused: {options.MaxIncoming} migrations are already coming in (--max-incoming)");
                throw receiver.Refuse($"the target is busy: {options.MaxIncoming} migrations are already coming in; try again");
            }
            destination = receiver.Receive((IncomingMachine incoming) =>
            {
                var description = incoming.Description;
                helloDeadline.Change(Timeout.Infinite, Timeout.Infinite);
                if (helloLate) throw new MigrationException($"no valid Hello within {HelloDeadline.TotalSeconds:0} s");
                if (options.Once)
                {
                    if (Interlocked.Exchange(ref _onceClaimed, 1) == 1)
                        throw new MigrationException("this target takes one migration (--once) and is already taking one");
                    claimedOnce = true;
                }
                lock (_running)
                {
                    if (!_names.Add(incoming.Name)) throw new MigrationException($"a VM named {incoming.Name} is here already");
                    name = incoming.Name;
                }
                log.Info($"migration {n}: VM {name}");
                description = DiskDirectories.CheckAllowed(description, [.. options.DiskDirs]);
                serialLog = options.SerialLog is null ? null : SerialLogFile.Open(PathFor(options.SerialLog, n, name));
                var settings = RunCommand.HostSettings(serialLog ?? Console.OpenStandardOutput(), options.NoNestedWorkarounds, options.DirtyRing, dirtyRingEntries: null) with { Name = name, HugePages = options.HugePages };
                return new MachineDestination(MachineBuilder.ForRestore(description.ToConfig(settings) with { DiskImagesOpenedAt = incoming.DiskImagesOpenedAt }, log));
            });
            var machine = destination.Machine;
            // Until the source's Commit the VM is the source's: nothing of it runs here, and any failure discards it.
            receiver.AwaitCommit();
            log.Info($"migration {n}: the source committed: VM {name} is this host's now");
            string? apiSocket = options.ApiSocket is null ? null : PathFor(options.ApiSocket, n, name!);
            control = apiSocket is null ? null : StartSocket("--api-socket", apiSocket, path => ControlServer.Start(machine, path, log));
            if (options.Paused) machine.Pause();
            var resuming = Stopwatch.StartNew();
            var run = Task.Factory.StartNew(machine.Run, TaskCreationOptions.LongRunning);
            try
            {
                receiver.ConfirmResumed();
                log.Debug($"migration {n}: VM started and the source told in {resuming.Elapsed.TotalMilliseconds:F1} ms");
            }
            catch (MigrationException e)
            {
                // Past the Commit the VM is ours: the source keeps its copy paused, in doubt, until it asks us.
                log.Warning($"migration {n}: the VM runs here, and the source may not have heard so ({e.Message}); it stays paused there until it asks");
            }
            log.Info($"migration {n}: the VM {(options.Paused ? "is here, paused until 'vmm ctl resume'" : "runs here")} ({receiver.BytesReceived >> 20} MiB received in {started.Elapsed.TotalMilliseconds:F0} ms)");
            var vm = new ReceivedVm(name!, n, machine, run, control, apiSocket, serialLog);
            lock (_running)
            {
                _running.Add(vm);
                _finishing.Add(run.ContinueWith(_ => Finish(vm, n, claimedOnce)));
            }
            // A signal that came while this VM was arriving stops it too.
            if (_signal is { } signal) machine.RequestStop(VmStop.BySignal(signal == 2 ? "SIGINT" : "SIGTERM", signal));
        }
        catch (Exception e)
        {
            string why = helloLate ? $"no valid Hello within {HelloDeadline.TotalSeconds:0} s"
                : e is VmmException ? e.Message : $"internal error in vmm: {e}";
            log.Error($"migration {n} from {source} failed and was discarded: {why}");
            if (name is not null)
                lock (_running) _names.Remove(name);
            control?.Dispose();
            destination?.Dispose();
            serialLog?.Dispose();
        }
        finally
        {
            // Only now: until the migration is in, its further connections still have to reach the listener.
            if (claimedOnce) StopListening();
            stream?.Dispose();
        }
    }

    private void Finish(ReceivedVm vm, int n, bool claimedOnce)
    {
        VmStop stop = vm.Run.Result;
        log.Info($"migration {n}: VM stopped: {stop.Description} (exit code {stop.ExitCode})");
        vm.Control?.Dispose();
        vm.Machine.Dispose();
        vm.SerialLog?.Dispose();
        lock (_running)
        {
            _running.Remove(vm);
            _names.Remove(vm.Name);
        }
        if (claimedOnce) _onceExitCode = stop.ExitCode;
    }

    private sealed record ReceivedVm(string Name, int Migration, Machine Machine, Task<VmStop> Run, IDisposable? Control, string? ApiSocket, Stream? SerialLog);

    private static T StartSocket<T>(string option, string path, Func<string, T> start)
    {
        try
        {
            return start(path);
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException)
        {
            throw new ConfigurationException($"{option} {path}: {e.Message}");
        }
    }

    private static string PathFor(string template, int n, string name) => VmName.Expand(template.Replace("{n}", n.ToString()), name);

    /// <summary>The daemon's own control socket: <c>list</c> (the VMs it runs) and <c>status</c>.</summary>
    private byte[] HandleControl(ReadOnlySpan<byte> request)
    {
        if (JsonAnswers.Parse(request, out byte[] malformed) is not var (_, command)) return malformed;
        ReceivedVm[] vms;
        lock (_running) vms = [.. _running];
        return command switch
        {
            "list" => JsonAnswers.Json(writer =>
            {
                writer.WriteBoolean("ok", true);
                writer.WriteStartArray("vms");
                foreach (var vm in vms)
                {
                    writer.WriteStartObject();
                    writer.WriteString("name", vm.Name);
                    writer.WriteNumber("migration", vm.Migration);
                    writer.WriteString("state", vm.Machine.StopReason is not null ? "stopping" : vm.Machine.IsPaused ? "paused" : "running");
                    if (vm.ApiSocket is not null) writer.WriteString("apiSocket", Path.GetFullPath(vm.ApiSocket));
                    writer.WriteNumber("uptimeMs", (long)vm.Machine.Uptime.TotalMilliseconds);
                    writer.WriteEndObject();
                }
                writer.WriteEndArray();
            }),
            "status" => JsonAnswers.Json(writer =>
            {
                writer.WriteBoolean("ok", true);
                writer.WriteString("state", "receiving");
                writer.WriteString("listen", listener.LocalEndpoint?.ToString());
                writer.WriteNumber("vms", vms.Length);
                writer.WriteNumber("incoming", options.MaxIncoming - Math.Max(0, Volatile.Read(ref _freeSlots)));
            }),
            _ => JsonAnswers.Error($"unknown command '{command}' for a migration daemon (expected list or status; a VM's own socket is its --api-socket)"),
        };
    }
}
