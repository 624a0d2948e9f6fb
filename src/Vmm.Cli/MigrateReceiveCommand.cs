using Vmm.Diagnostics;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary><c>vmm migrate-receive</c>: parses the options and runs a <see cref="MigrationDaemon"/>.</summary>
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
        try
        {
            return new MigrationDaemon(options, incoming.Listener, incoming.Tls, log).Run();
        }
        catch (ConfigurationException e)
        {
            log.Error(e.Message);
            return ExitCodes.VmmError;
        }
    }
}
