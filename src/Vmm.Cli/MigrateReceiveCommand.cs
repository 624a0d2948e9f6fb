using System.Net;
using System.Net.Sockets;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary><c>vmm migrate-receive</c>: parses the options and runs a <see cref="MigrationDaemon"/>.</summary>
public static class MigrateReceiveCommand
{
    public static int Execute(MigrateReceiveOptions options)
    {
        var log = Logger.Stderr(options.Verbose ? LogLevel.Debug : LogLevel.Info);
        if (!MigrationSource.TryParseEndpoint(options.Listen, out string host, out int port, allowPortZero: true) || !IPAddress.TryParse(host, out var address))
        {
            log.Error($"--listen {options.Listen}: expected ADDRESS:PORT with a numeric address, e.g. 0.0.0.0:7000");
            return ExitCodes.VmmError;
        }
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
            return new MigrationDaemon(options, listener, log).Run();
        }
        catch (ConfigurationException e)
        {
            listener.Stop();
            log.Error(e.Message);
            return ExitCodes.VmmError;
        }
    }
}
