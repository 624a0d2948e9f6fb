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
        if (options.TlsDir is null && !options.Insecure && ReachableFromOtherHosts(address))
        {
            log.Error($"--listen {options.Listen}: migrations from other hosts need --tls-dir DIR (mutual TLS); over plain TCP anyone who " +
                      "reaches the port could send a VM to run here or read the VMs sent. --insecure listens without TLS anyway (a trusted network only)");
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
            return new MigrationDaemon(options, listener, tls, log).Run();
        }
        catch (ConfigurationException e)
        {
            listener.Stop();
            log.Error(e.Message);
            return ExitCodes.VmmError;
        }
    }

    /// <summary>Whether a listener on <paramref name="address"/> takes connections from other hosts: anything
    /// but loopback (127.0.0.0/8, ::1, and 127.x written as an IPv4-mapped IPv6 address).</summary>
    public static bool ReachableFromOtherHosts(IPAddress address) =>
        !IPAddress.IsLoopback(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address);
}
