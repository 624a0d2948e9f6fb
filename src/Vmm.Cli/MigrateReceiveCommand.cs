using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Vmm.Control;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary><c>vmm migrate-receive</c>: the target daemon. It takes migrations one at a time; each VM that
/// arrives runs in this process on its own threads while the daemon waits for the next. A migration that
/// fails is discarded and reported, and the daemon goes on listening.</summary>
public static class MigrateReceiveCommand
{
    private static readonly TimeSpan SourceSilenceLimit = TimeSpan.FromSeconds(60);

    public static int Execute(MigrateReceiveOptions options)
    {
        var log = Logger.Stderr(options.Verbose ? LogLevel.Debug : LogLevel.Info);
        if (!MigrationSource.TryParseEndpoint(options.Listen, out string host, out int port) || !IPAddress.TryParse(host, out var address))
        {
            log.Error($"--listen {options.Listen}: expected ADDRESS:PORT with a numeric address, e.g. 0.0.0.0:7000");
            return ExitCodes.VmmError;
        }
        var listener = new TcpListener(address, port);
        try
        {
            listener.Start();
        }
        catch (SocketException e)
        {
            log.Error($"--listen {options.Listen}: {e.Message}");
            return ExitCodes.VmmError;
        }
        var running = new List<ReceivedVm>();
        var finishing = new List<Task>();
        int? signal = null;
        void OnSignal(PosixSignalContext context, int number)
        {
            context.Cancel = true;
            signal = number;
            // The VMs first: stopping the listener lets the main thread go on to stop them for another reason.
            lock (running)
                foreach (var vm in running) vm.Machine.RequestStop(VmStop.BySignal(context.Signal.ToString(), number));
            listener.Stop();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => OnSignal(c, 2));
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => OnSignal(c, 15));
        log.Info($"waiting for migrations on {listener.LocalEndpoint}");
        int exitCode = ExitCodes.GuestFinished;
        try
        {
            for (int n = 1; signal is null; n++)
            {
                Socket connection;
                try { connection = listener.AcceptSocket(); }
                catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException) { break; }
                var vm = ReceiveOne(connection, n, options, log);
                if (vm is null)
                {
                    if (options.Once) return ExitCodes.VmmError;
                    continue;
                }
                lock (running) running.Add(vm);
                if (options.Once)
                {
                    listener.Stop();
                    exitCode = Finish(vm, n, log);
                    break;
                }
                int number = n;
                finishing.Add(vm.Run.ContinueWith(_ =>
                {
                    lock (running) running.Remove(vm);
                    Finish(vm, number, log);
                }));
            }
        }
        finally
        {
            listener.Stop();
            ReceivedVm[] left;
            lock (running) left = running.ToArray();
            foreach (var vm in left) vm.Machine.RequestStop(VmStop.Error("the migration daemon is exiting"));
            foreach (var vm in left) vm.Run.Wait();
            // Each VM's end is logged and its resources released before the daemon exits.
            Task.WaitAll(finishing);
        }
        return signal is { } s && !options.Once ? ExitCodes.Signal(s) : exitCode;
    }

    private static ReceivedVm? ReceiveOne(Socket connection, int n, MigrateReceiveOptions options, Logger log)
    {
        using var _ = connection;
        string source = connection.RemoteEndPoint?.ToString() ?? "?";
        log.Info($"migration {n}: receiving a VM from {source}");
        connection.NoDelay = true;
        connection.ReceiveBufferSize = 4 << 20;
        connection.ReceiveTimeout = connection.SendTimeout = (int)SourceSilenceLimit.TotalMilliseconds;
        var receiver = new MigrationReceiver(new NetworkStream(connection, ownsSocket: false), log);
        Stream? serialLog = null;
        Machine? machine = null;
        ControlServer? control = null;
        var started = DateTime.UtcNow;
        try
        {
            serialLog = options.SerialLog is null ? null : new FileStream(Numbered(options.SerialLog, n), FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0);
            var serial = serialLog ?? Console.OpenStandardOutput();
            machine = receiver.Receive(description =>
            {
                CheckDisksAllowed(description, options.DiskDirs.ToList());
                return Machine.CreateForRestore(RunCommand.ConfigFor(description, serial, options.NoNestedWorkarounds, options.DirtyRing), log);
            });
            control = options.ApiSocket is null ? null : ControlServer.Start(machine, Numbered(options.ApiSocket, n), log);
            var resuming = System.Diagnostics.Stopwatch.StartNew();
            var run = Task.Factory.StartNew(machine.Run, TaskCreationOptions.LongRunning);
            try
            {
                receiver.ConfirmResumed();
                log.Debug($"migration {n}: VM started and the source told in {resuming.Elapsed.TotalMilliseconds:F1} ms");
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
                // The source did not hear that the VM runs here, so it resumes it there: this copy must go.
                machine.RequestStop(VmStop.Error($"migration {n}: could not confirm to the source ({e.Message}); this copy is discarded"));
                run.Wait();
                throw new MigrationException(e.Message, e);
            }
            log.Info($"migration {n}: the VM runs here ({receiver.BytesReceived >> 20} MiB received in {(DateTime.UtcNow - started).TotalMilliseconds:F0} ms)");
            return new ReceivedVm(machine, run, control, serialLog);
        }
        catch (Exception e) when (e is MigrationException or IOException or SocketException or UnauthorizedAccessException)
        {
            log.Error($"migration {n} from {source} failed and was discarded: {e.Message}");
            control?.Dispose();
            machine?.Dispose();
            serialLog?.Dispose();
            return null;
        }
    }

    private static int Finish(ReceivedVm vm, int n, Logger log)
    {
        VmStop stop = vm.Run.Result;
        log.Info($"migration {n}: VM stopped: {stop.Description} (exit code {stop.ExitCode})");
        vm.Control?.Dispose();
        vm.Machine.Dispose();
        vm.SerialLog?.Dispose();
        return stop.ExitCode;
    }

    /// <summary>The disk paths come from the network: each must lie, after normalizing and following a
    /// symlink, inside a directory the operator named with --disk-dir.</summary>
    private static void CheckDisksAllowed(State.MachineDescription description, IReadOnlyList<string> diskDirs)
    {
        var allowed = diskDirs.Select(d => Path.TrimEndingDirectorySeparator(Path.GetFullPath(d)) + Path.DirectorySeparatorChar).ToList();
        foreach (var disk in description.Disks)
        {
            string full = Path.GetFullPath(disk.Path);
            string resolved = File.Exists(full) ? new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full : full;
            if (!allowed.Any(dir => full.StartsWith(dir, StringComparison.Ordinal) && resolved.StartsWith(dir, StringComparison.Ordinal)))
                throw new Boot.BootException(allowed.Count == 0
                    ? $"the VM has the disk {disk.Path}, and this target serves no disk directory (start vmm migrate-receive with --disk-dir DIR)"
                    : $"the VM's disk {disk.Path} is outside the directories this target serves ({string.Join(", ", diskDirs)})");
        }
    }

    private sealed record ReceivedVm(Machine Machine, Task<VmStop> Run, IDisposable? Control, Stream? SerialLog);

    private static string Numbered(string template, int n) => template.Replace("{n}", n.ToString());
}
