using Vmm.Diagnostics;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary><c>vmm standby</c>: checks the options and runs a <see cref="StandbyDaemon"/>.</summary>
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
        try
        {
            return new StandbyDaemon(options, incoming.Listener, incoming.Tls, log).Run();
        }
        catch (ConfigurationException e)
        {
            log.Error(e.Message);
            return ExitCodes.VmmError;
        }
    }
}
