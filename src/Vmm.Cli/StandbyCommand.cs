using Vmm.Control;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Replication;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary><c>vmm standby</c>: checks the options and hosts a <see cref="StandbyDaemon"/>: its listener, its control
/// socket (the standby's, then the resumed VM's), the signals that stop it.</summary>
public static class StandbyCommand
{
    public static int Execute(StandbyOptions options)
    {
        var log = Logger.Stderr(options.Verbose ? LogLevel.Debug : LogLevel.Info);
        if (!Directory.Exists(options.DiskDir))
        {
            log.Error($"--disk-dir {options.DiskDir} is not a directory");
            return ExitCodes.VmmError;
        }
        if (options.Name is { } name && !VmName.IsValid(name))
        {
            log.Error($"--name '{name}' is not a VM name: 1 to {VmName.MaxLength} letters, digits, '.', '_' or '-', starting with a letter or digit");
            return ExitCodes.VmmError;
        }
        if (options.TimeoutRefusal() is { } refusal)
        {
            log.Error(refusal);
            return ExitCodes.VmmError;
        }
        using var incoming = IncomingListener.Open(options.Listen, options.TlsDir, options.Insecure, "replication streams", log);
        if (incoming is null) return ExitCodes.VmmError;
        var settings = new StandbySettings
        {
            Name = options.Name,
            DiskDir = options.DiskDir,
            FailoverTimeout = TimeSpan.FromMilliseconds(options.FailoverTimeoutMs),
            FenceCommand = options.FenceCommand,
            FenceTimeout = options.FenceTimeout,
            SerialLog = options.SerialLog,
            Host = RunCommand.HostSettings(Stream.Null, options.NoNestedWorkarounds, dirtyRing: false, dirtyRingEntries: null),
            Transport = options.TlsDir is null ? "plain TCP" : $"mutual TLS with {options.TlsDir}",
            ControlSocketForHints = options.ApiSocket ?? "API",
        };
        var standby = options.ApiSocket is not { } path ? new StandbyDaemon(settings, incoming.Listener, incoming.Tls, log)
            : new StandbyDaemon(settings, incoming.Listener, incoming.Tls, log,
                self => SocketOption.Start("--api-socket", path, p => StandbyControl.Start(self, p, log)),
                machine => SocketOption.Start("--api-socket", path, p => ControlServer.Start(machine, p, log)));
        try
        {
            using var signals = TerminationSignals.Handle(standby.Stop);
            return standby.Run();
        }
        catch (ConfigurationException e)
        {
            log.Error(e.Message);
            return ExitCodes.VmmError;
        }
    }
}
