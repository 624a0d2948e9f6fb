using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using Vmm.Diagnostics;
using Vmm.State;
using Vmm.Vm;

namespace Vmm.Migration;

/// <summary>The migration target daemon behind <c>vmm migrate-receive</c>. Each connection is received on its own
/// thread (<see cref="IncomingConnections"/>), up to <see cref="MigrationDaemonSettings.MaxIncoming"/> migrations at a
/// time; a peer that has not sent a valid Hello (or Join, for one more connection of a migration under way) within the
/// first-frame deadline is dropped, so a silent or slow connection holds no one up, and at most
/// <see cref="MaxAwaitingFirstFrame"/> per migration slot wait for theirs. Each VM that arrives runs in this process
/// on its own threads. Every incoming migration is a failure boundary: whatever goes wrong in one (a hostile stream, a
/// bug) discards that one and is logged; the daemon, its other migrations and the VMs it runs go on. VMs are known here
/// by the name they travel with: at most one of each name, and <c>{name}</c> in the socket and log paths puts it in
/// them. <paramref name="startControl"/> serves a received VM's control socket (the layer above provides it).</summary>
public sealed class MigrationDaemon(MigrationDaemonSettings settings, TcpListener listener, MigrationTls? tls, Logger log,
    Func<Machine, string, IDisposable>? startControl = null)
{
    private static readonly TimeSpan SourceSilenceLimit = TimeSpan.FromSeconds(60);
    /// <summary>Per migration slot, the connections that may wait for their first frame at once: every further
    /// connection of a migration, as many as it may have, and no more threads than that for silent peers.</summary>
    public const int MaxAwaitingFirstFrame = MigrationHello.MaxConnections;

    private readonly IncomingConnections _connections = new(listener, log, "", "the target is busy");
    private readonly MigrationJoins _joins = new();
    private readonly MigrationOutcomes _outcomes = new();
    private readonly List<ReceivedVm> _running = [];
    /// <summary>The names of the VMs running here or arriving (guarded by <see cref="_running"/>).</summary>
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly List<Task> _finishing = [];
    private int _freeSlots = settings.MaxIncoming;
    private VmStop? _stoppedBy;
    private int _onceClaimed;
    /// <summary>With Once: the exit code of the VM that came in, or null while none has ended.</summary>
    private int? _onceExitCode;

    public System.Net.EndPoint? LocalEndpoint => listener.LocalEndpoint;

    /// <summary>The VMs running here now.</summary>
    public IReadOnlyList<ReceivedVm> Vms
    {
        get { lock (_running) return [.. _running]; }
    }

    /// <summary>How many migrations are coming in now.</summary>
    public int Incoming => settings.MaxIncoming - Math.Max(0, Volatile.Read(ref _freeSlots));

    /// <summary>Takes migrations until <see cref="Stop"/> (or, with Once, until the one migration is in), then waits
    /// for every VM here to end; returns the exit code of the daemon.</summary>
    public int Run()
    {
        log.Info($"waiting for migrations on {listener.LocalEndpoint} ({settings.Transport})");
        try
        {
            _connections.AcceptUntilStopped(settings.MaxIncoming * MaxAwaitingFirstFrame, () => null, ReceiveOne, "migration");
        }
        finally
        {
            _connections.Stop();
            _connections.WaitForConnections();
        }
        // Every VM here runs to its end (Stop stops them all); each is logged and released before the exit.
        Task[] finishing;
        lock (_running) finishing = [.. _finishing];
        Task.WaitAll(finishing);
        if (settings.Once && Volatile.Read(ref _onceClaimed) == 1) return _onceExitCode ?? ExitCodes.VmmError;
        return _stoppedBy is { } stop ? stop.ExitCode : settings.Once ? ExitCodes.VmmError : ExitCodes.GuestFinished;
    }

    /// <summary>Stops every VM here, gives up the migrations still coming in, and stops listening (a signal).</summary>
    public void Stop(VmStop why)
    {
        lock (_running)
        {
            _stoppedBy = why;
            foreach (var vm in _running) vm.Machine.RequestStop(why);
        }
        _connections.CloseAll();
        _connections.Stop();
    }

    /// <summary>One incoming migration, from the Hello to a running VM (or its discarding).</summary>
    private void ReceiveOne(IncomingConnection connection)
    {
        int n = connection.Number;
        var socket = connection.Socket;
        log.Info($"migration {n}: connection from {connection.Source}");
        socket.NoDelay = true;
        socket.ReceiveBufferSize = 4 << 20;
        socket.ReceiveTimeout = socket.SendTimeout = (int)SourceSilenceLimit.TotalMilliseconds;
        Stream? stream = null;
        bool claimedSlot = false, claimedOnce = false;
        string? name = null;
        Stream? serialLog = null;
        MachineDestination? destination = null;
        IDisposable? control = null;
        var started = Stopwatch.StartNew();
        try
        {
            stream = IncomingMigrationStream.Open(socket, tls);
            if (stream is SslStream session) log.Info($"migration {n}: mutual TLS ({session.SslProtocol}) with {session.RemoteCertificate?.Subject}");
            var receiver = new MigrationReceiver(stream, log, settings.DiskDirs.FirstOrDefault() is { } copyInto ? Path.GetFullPath(copyInto) : null, _joins, socket, _outcomes);
            bool hello = receiver.ReadHelloOrServeJoin(index =>
            {
                connection.FirstFrameRead();
                log.Info($"migration {n}: connection {index} of a migration under way");
            });
            if (!hello)
            {
                log.Debug($"migration {n}: that connection's part is done (a further connection, or a question)");
                return;
            }
            connection.FirstFrameRead();
            if (!(claimedSlot = TryClaimSlot()))
            {
                log.Warning($"migration {n} from {connection.Source} refused: {settings.MaxIncoming} migrations are already coming in (--max-incoming)");
                throw receiver.Refuse($"the target is busy: {settings.MaxIncoming} migrations are already coming in; try again");
            }
            destination = receiver.Receive((IncomingMachine incoming) =>
            {
                if (settings.Once)
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
                var description = DiskDirectories.CheckAllowed(incoming.Description, settings.DiskDirs);
                serialLog = settings.SerialLog is null ? null : SerialLogFile.Open(PathFor(settings.SerialLog, n, name));
                var config = description.ToConfig(settings.Host with { SerialOutput = serialLog ?? Console.OpenStandardOutput(), Name = name });
                return new MachineDestination(MachineBuilder.ForRestore(config with { DiskImagesOpenedAt = incoming.DiskImagesOpenedAt }, log));
            });
            var machine = destination.Machine;
            // Until the source's Commit the VM is the source's: nothing of it runs here, and any failure discards it.
            receiver.AwaitCommit();
            log.Info($"migration {n}: the source committed: VM {name} is this host's now");
            string? apiSocket = settings.ApiSocket is null ? null : PathFor(settings.ApiSocket, n, name!);
            control = apiSocket is null || startControl is null ? null : startControl(machine, apiSocket);
            if (settings.Paused) machine.Pause();
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
            log.Info($"migration {n}: the VM {(settings.Paused ? "is here, paused until 'vmm ctl resume'" : "runs here")} ({receiver.BytesReceived >> 20} MiB received in {started.Elapsed.TotalMilliseconds:F0} ms)");
            var vm = new ReceivedVm(name!, n, machine, run, control, apiSocket, serialLog);
            lock (_running)
            {
                _running.Add(vm);
                _finishing.Add(run.ContinueWith(_ => Finish(vm, n, claimedOnce)));
                // A stop that came while this VM was arriving stops it too.
                if (_stoppedBy is { } stop) machine.RequestStop(stop);
            }
        }
        catch (Exception e)
        {
            log.Error($"migration {n} from {connection.Source} failed and was discarded: {connection.Describe(e)}");
            if (name is not null)
                lock (_running) _names.Remove(name);
            control?.Dispose();
            destination?.Dispose();
            serialLog?.Dispose();
        }
        finally
        {
            // Only now: until the migration is in, its further connections still have to reach the listener.
            if (claimedOnce) _connections.Stop();
            if (claimedSlot) Interlocked.Increment(ref _freeSlots);
            stream?.Dispose();
        }
    }

    private bool TryClaimSlot()
    {
        if (Interlocked.Decrement(ref _freeSlots) >= 0) return true;
        Interlocked.Increment(ref _freeSlots);
        return false;
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

    private static string PathFor(string template, int n, string name) => VmName.Expand(template.Replace("{n}", n.ToString()), name);
}
