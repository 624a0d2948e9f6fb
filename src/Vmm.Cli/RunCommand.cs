using Vmm.Diagnostics;
using Vmm.Snapshot;
using Vmm.State;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary><c>vmm run</c>: builds the VM from the options (or a config file, or a snapshot), wires the terminal and signals, runs it, and
/// turns how it stopped into the exit code.</summary>
public static class RunCommand
{
    public static int Execute(RunOptions options)
    {
        var log = Logger.Stderr(options.Verbose ? LogLevel.Debug : LogLevel.Info);
        try
        {
            if (options.Config is not null) return Boot(FromConfigFile(options), log);
            if (options.Restore is not null) return Restore(options, log);
            return Boot(options.ToVmDefinition(), log);
        }
        catch (ConfigurationException e)
        {
            log.Error(e.Message);
            return ExitCodes.VmmError;
        }
    }

    /// <summary><c>vmm run --config FILE</c>: the file describes the whole VM, so an option that does too is
    /// refused rather than left to win or lose against it silently.</summary>
    private static VmDefinition FromConfigFile(RunOptions options)
    {
        string[] conflicting = [.. options.GivenMachineOptions(), .. options.GivenHostOptions()];
        if (conflicting.Length > 0)
            throw new ConfigurationException($"--config describes the whole VM; {string.Join(", ", conflicting)} cannot be given with it (only -v can)");
        return VmConfigFile.Read(options.Config!);
    }

    private static int Boot(VmDefinition vm, Logger log) =>
        RunMachine(vm.SerialLogPath, vm.ApiSocketPath, log, serial => MachineBuilder.Boot(vm.ToMachineConfig(serial), log));

    /// <summary><c>vmm run --restore DIR</c>: the machine comes from the snapshot, so the options that
    /// describe one are refused rather than silently ignored.</summary>
    private static int Restore(RunOptions options, Logger log)
    {
        string[] conflicting = [.. options.GivenMachineOptions()];
        if (conflicting.Length > 0)
            throw new ConfigurationException($"--restore takes the machine from the snapshot; {string.Join(", ", conflicting)} cannot be given with it");
        string name = options.Name is null ? VmName.Derive(options.Restore) : VmName.Check(options.Name, "--name");
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
        return RunMachine(options.SerialLog, options.ApiSocket, log, serial =>
        {
            var settings = HostSettings(serial, options.NoNestedWorkarounds, options.DirtyRing, options.DirtyRingEntries) with { Name = name };
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

    private static int RunMachine(string? serialLogPath, string? apiSocketPath, Logger log, Func<Stream, Machine> build)
    {
        Stream? serialLog = null;
        try
        {
            serialLog = serialLogPath is null ? null : SerialLogFile.Open(serialLogPath);
            using var machine = build(serialLog ?? Console.OpenStandardOutput());
            // vmm stops the VM itself and exits with 128+N once the vCPUs are out of KVM_RUN.
            using var signals = TerminationSignals.Handle(machine.RequestStop);
            using var control = apiSocketPath is null ? null : SocketOption.Start("--api-socket", apiSocketPath, path => Control.ControlServer.Start(machine, path, log));
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
