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
        if (options.FailoverTimeoutMs is < 50 or > 600_000)
        {
            log.Error($"--failover-timeout-ms {options.FailoverTimeoutMs}: it must be 50-600000");
            return ExitCodes.VmmError;
        }
        if (options.FenceTimeoutS is < 1)
        {
            log.Error($"--fence-timeout-s {options.FenceTimeoutS}: at least 1");
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
