using System.Net;
using System.Net.Sockets;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary><c>vmm standby</c>: checks the options and runs a <see cref="StandbyDaemon"/>.</summary>
public static class StandbyCommand
{
    public static int Execute(StandbyOptions options)
    {
        var log = Logger.Stderr(options.Verbose ? LogLevel.Debug : LogLevel.Info);
        if (!MigrationSource.TryParseEndpoint(options.Listen, out string host, out int port, allowPortZero: true) || !IPAddress.TryParse(host, out var address))
        {
            log.Error($"--listen {options.Listen}: expected ADDRESS:PORT with a numeric address, e.g. 0.0.0.0:7100");
            return ExitCodes.VmmError;
        }
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
        if (options.FenceTimeoutS < 1)
        {
            log.Error($"--fence-timeout-s {options.FenceTimeoutS}: at least 1");
            return ExitCodes.VmmError;
        }
        if (options.TlsDir is null && !options.Insecure && MigrateReceiveCommand.ReachableFromOtherHosts(address))
        {
            log.Error($"--listen {options.Listen}: replication from other hosts needs --tls-dir DIR (mutual TLS); over plain TCP anyone who " +
                      "reaches the port could read the VM or feed this standby a VM of their own. --insecure listens without TLS anyway (a trusted network only)");
            return ExitCodes.VmmError;
        }
        MigrationTls? tls;
        try
        {
            tls = options.TlsDir is null ? null : MigrationTls.Load(options.TlsDir);
        }
        catch (ConfigurationException e)
        {
            log.Error($"--tls-dir {options.TlsDir}: {e.Message}");
            return ExitCodes.VmmError;
        }
        using var _ = tls;
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
        try
        {
            return new StandbyDaemon(options, listener, tls, log).Run();
        }
        catch (ConfigurationException e)
        {
            listener.Stop();
            log.Error(e.Message);
            return ExitCodes.VmmError;
        }
    }
}
