using System.Runtime.InteropServices;
using Vmm.Boot;
using Vmm.Diagnostics;
using Vmm.Kvm;
using Vmm.Memory;
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
        if (!MemorySize.TryParse(options.Memory, out ulong memoryBytes, out string error))
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

        Stream? serialLog = null;
        try
        {
            serialLog = options.SerialLog is null ? null : OpenSerialLog(options.SerialLog);
            var config = new MachineConfig
            {
                KernelPath = options.Kernel,
                InitrdPath = options.Initrd,
                CommandLine = options.CommandLine ?? MachineConfig.DefaultCommandLine,
                MemoryBytes = memoryBytes,
                VcpuCount = options.Cpus,
                Disks = disks,
                Networks = networks,
                SerialOutput = serialLog ?? Console.OpenStandardOutput(),
                NestedKvmWorkarounds = !options.NoNestedWorkarounds,
            };
            using var machine = Machine.Create(config, log);
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => StopBySignal(c, machine, "SIGINT", SigInt));
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => StopBySignal(c, machine, "SIGTERM", SigTerm));
            using var control = options.ApiSocket is null ? null : StartControl(machine, options.ApiSocket, log);
            using var terminal = TerminalInput.Start(machine);
            VmStop stop = machine.Run();
            terminal?.Dispose();
            Report(log, stop);
            return stop.ExitCode;
        }
        catch (Exception e) when (e is BootException or PosixException or GuestMemoryException)
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
            throw new BootException($"--api-socket {path}: {e.Message}");
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
            throw new BootException($"--serial-log {path} cannot be written: {e.Message}");
        }
    }

    private static void Report(Logger log, VmStop stop)
    {
        string message = $"{stop.Description} (exit code {stop.ExitCode})";
        switch (stop.Kind)
        {
            case VmStopKind.GuestCrash or VmStopKind.EmulationFailure or VmStopKind.VmmError:
                log.Error(message);
                break;
            default:
                log.Info(message);
                break;
        }
    }
}
