using System.Runtime.InteropServices;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Snapshot;
using Vmm.State;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary><c>vmm run</c>: builds the VM from the options, wires the terminal and signals, runs it, and
/// turns how it stopped into the exit code.</summary>
public static class RunCommand
{
    private const int SigInt = 2, SigTerm = 15;

    public static int Execute(RunOptions options)
    {
        var log = Logger.Stderr(options.Verbose ? LogLevel.Debug : LogLevel.Info);
        if (options.Name is { } given && !VmName.IsValid(given))
        {
            log.Error($"--name '{given}' is not a VM name: 1 to {VmName.MaxLength} letters, digits, '.', '_' or '-', starting with a letter or digit");
            return ExitCodes.VmmError;
        }
        if (options.Restore is not null) return Restore(options, log);
        if (options.Kernel is null)
        {
            log.Error("--kernel is required (or --restore DIR to continue a snapshot)");
            return ExitCodes.VmmError;
        }
        if (options.DirtyRingEntries is not null && !options.DirtyRing)
        {
            log.Error("--dirty-ring-entries sizes the rings of --dirty-ring, which is not given");
            return ExitCodes.VmmError;
        }
        if (!MemorySize.TryParse(options.Memory ?? "256M", out ulong memoryBytes, out string error))
        {
            log.Error($"--memory: {error}");
            return ExitCodes.VmmError;
        }

        var disks = new List<Devices.Virtio.BlockDiskConfig>();
        foreach (string text in options.Disks)
        {
            if (!Devices.Virtio.BlockDiskConfig.TryParse(text, out var disk, out string diskError))
            {
                log.Error(diskError);
                return ExitCodes.VmmError;
            }
            disks.Add(disk!);
        }

        var networks = new List<Devices.Virtio.NetworkConfig>();
        foreach (string text in options.Networks)
        {
            if (!Devices.Virtio.NetworkConfig.TryParse(text, out var network, out string netError))
            {
                log.Error(netError);
                return ExitCodes.VmmError;
            }
            networks.Add(network!);
        }

        return RunMachine(options, log, serial => MachineBuilder.Boot(new MachineConfig
        {
            Name = options.Name ?? VmName.Derive(options.Kernel),
            KernelPath = options.Kernel,
            InitrdPath = options.Initrd,
            CommandLine = options.CommandLine ?? MachineConfig.DefaultCommandLine,
            MemoryBytes = memoryBytes,
            VcpuCount = options.Cpus ?? 1,
            Disks = disks,
            Networks = networks,
            SerialOutput = serial,
            NestedKvmWorkarounds = !options.NoNestedWorkarounds,
            HugePages = options.HugePages,
            DirtyRing = options.DirtyRing,
            DirtyRingEntries = options.DirtyRingEntries,
        }, log));
    }

    /// <summary><c>vmm run --restore DIR</c>: the machine comes from the snapshot, so the options that
    /// describe one are refused rather than silently ignored.</summary>
    private static int Restore(RunOptions options, Logger log)
    {
        string[] conflicting = [
            .. options.Kernel is null ? Array.Empty<string>() : ["--kernel"],
            .. options.Initrd is null ? Array.Empty<string>() : ["--initrd"],
            .. options.CommandLine is null ? Array.Empty<string>() : ["--cmdline"],
            .. options.Memory is null ? Array.Empty<string>() : ["--memory"],
            .. options.Cpus is null ? Array.Empty<string>() : ["--cpus"],
            .. options.Disks.Any() ? ["--disk"] : Array.Empty<string>(),
            .. options.Networks.Any() ? ["--net"] : Array.Empty<string>(),
        ];
        if (conflicting.Length > 0)
        {
            log.Error($"--restore takes the machine from the snapshot; {string.Join(", ", conflicting)} cannot be given with it");
            return ExitCodes.VmmError;
        }
        MachineState state;
        string memoryPath;
        try
        {
            (state, memoryPath) = SnapshotDirectory.Read(options.Restore!);
        }
        catch (VmmException e)
        {
            log.Error($"--restore {options.Restore}: {e.Message}");
            return ExitCodes.VmmError;
        }
        return RunMachine(options, log, serial =>
        {
            var settings = HostSettings(serial, options.NoNestedWorkarounds, options.DirtyRing, options.DirtyRingEntries) with { Name = options.Name ?? VmName.Derive(options.Restore) };
            var machine = MachineBuilder.ForRestore(state.Description.ToConfig(settings), log, memoryPath);
            try
            {
                MachinePersistence.Restore(machine, state);
            }
            catch
            {
                machine.Dispose();
                throw;
            }
            log.Info($"restored the VM saved in {options.Restore}");
            return machine;
        });
    }

    /// <summary>What this host decides for a machine whose shape comes from elsewhere (a snapshot, a migration).</summary>
    public static MachineConfig HostSettings(Stream serial, bool noNestedWorkarounds, bool dirtyRing, int? dirtyRingEntries) => new()
    {
        SerialOutput = serial,
        NestedKvmWorkarounds = !noNestedWorkarounds,
        DirtyRing = dirtyRing,
        DirtyRingEntries = dirtyRingEntries,
    };

    private static int RunMachine(RunOptions options, Logger log, Func<Stream, Machine> build)
    {
        Stream? serialLog = null;
        try
        {
            serialLog = options.SerialLog is null ? null : OpenSerialLog(options.SerialLog);
            using var machine = build(serialLog ?? Console.OpenStandardOutput());
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => StopBySignal(c, machine, "SIGINT", SigInt));
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => StopBySignal(c, machine, "SIGTERM", SigTerm));
            using var control = options.ApiSocket is null ? null : StartControl(machine, options.ApiSocket, log);
            using var terminal = TerminalInput.Start(machine);
            VmStop stop = machine.Run();
            terminal?.Dispose();
            Report(log, stop);
            return stop.ExitCode;
        }
        catch (VmmException e)
        {
            log.Error(e.Message);
            return ExitCodes.VmmError;
        }
        finally
        {
            serialLog?.Dispose();
        }
    }

    private static Control.ControlServer StartControl(Machine machine, string path, Logger log)
    {
        try
        {
            return Control.ControlServer.Start(machine, path, log);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
        {
            throw new ConfigurationException($"--api-socket {path}: {e.Message}");
        }
    }

    private static void StopBySignal(PosixSignalContext context, Machine machine, string name, int number)
    {
        // vmm stops the VM itself and exits with 128+N once the vCPUs are out of KVM_RUN.
        context.Cancel = true;
        machine.RequestStop(VmStop.BySignal(name, number));
    }

    private static Stream OpenSerialLog(string path)
    {
        try
        {
            return new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigurationException($"--serial-log {path} cannot be written: {e.Message}");
        }
    }

    private static void Report(Logger log, VmStop stop)
    {
        string message = $"{stop.Description} (exit code {stop.ExitCode})";
        switch (stop.Kind)
        {
            case VmStopKind.GuestCrash or VmStopKind.EmulationFailure or VmStopKind.VmmError or VmStopKind.InternalError:
                log.Error(message);
                break;
            default:
                log.Info(message);
                break;
        }
    }
}
