using Vmm.Control;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary><c>vmm migrate-receive</c>: checks the options and hosts a <see cref="MigrationDaemon"/>: its listener,
/// its control sockets, the signals that stop it.</summary>
public static class MigrateReceiveCommand
{
    public static int Execute(MigrateReceiveOptions options)
    {
        var log = Logger.Stderr(options.Verbose ? LogLevel.Debug : LogLevel.Info);
        if (options.MaxIncoming < 1)
        {
            log.Error($"--max-incoming {options.MaxIncoming}: at least one migration must be able to come in");
            return ExitCodes.VmmError;
        }
        if (options.Paused && options.ApiSocket is null)
        {
            log.Error("--paused needs --api-socket: a received VM is resumed through its control socket");
            return ExitCodes.VmmError;
        }
        if (options.DiskDirs.FirstOrDefault() is { } copyInto && !Directory.Exists(copyInto))
        {
            log.Error($"--disk-dir {copyInto} is not a directory");
            return ExitCodes.VmmError;
        }
        using var incoming = IncomingListener.Open(options.Listen, options.TlsDir, options.Insecure, "migrations", log);
        if (incoming is null) return ExitCodes.VmmError;
        var settings = new MigrationDaemonSettings
        {
            MaxIncoming = options.MaxIncoming,
            Once = options.Once,
            Paused = options.Paused,
            DiskDirs = [.. options.DiskDirs],
            SerialLog = options.SerialLog,
            ApiSocket = options.ApiSocket,
            Host = RunCommand.HostSettings(Stream.Null, options.NoNestedWorkarounds, options.DirtyRing, dirtyRingEntries: null) with { HugePages = options.HugePages },
            Transport = options.TlsDir is null ? "plain TCP" : $"mutual TLS with {options.TlsDir}",
        };
        var daemon = new MigrationDaemon(settings, incoming.Listener, incoming.Tls, log,
            (machine, path) => SocketOption.Start("--api-socket", path, p => ControlServer.Start(machine, p, log)));
        try
        {
            using var signals = TerminationSignals.Handle(daemon.Stop);
            using var control = options.ControlSocket is null ? null
                : SocketOption.Start("--control-socket", options.ControlSocket, path => MigrationDaemonControl.Start(daemon, path, log));
            return daemon.Run();
        }
        catch (ConfigurationException e)
        {
            log.Error(e.Message);
            return ExitCodes.VmmError;
        }
    }
}
