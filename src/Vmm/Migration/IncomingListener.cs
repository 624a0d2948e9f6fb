using System.Net;
using System.Net.Sockets;
using Vmm.Diagnostics;

namespace Vmm.Migration;

/// <summary>The listening side that <c>migrate-receive</c> and <c>standby</c> share: the --listen address, plain TCP
/// refused beyond loopback unless --insecure, the --tls-dir files loaded, the port bound. Each refusal is logged and
/// returns null (the command exits 2).</summary>
public sealed class IncomingListener(TcpListener listener, MigrationTls? tls) : IDisposable
{
    public TcpListener Listener => listener;
    public MigrationTls? Tls => tls;

    public static IncomingListener? Open(string listen, string? tlsDir, bool insecure, string whatComesIn, Logger log)
    {
        if (!MigrationSource.TryParseEndpoint(listen, out string host, out int port, allowPortZero: true) || !IPAddress.TryParse(host, out var address))
        {
            log.Error($"--listen {listen}: expected ADDRESS:PORT with a numeric address, e.g. 0.0.0.0:7000");
            return null;
        }
        if (tlsDir is null && !insecure && ReachableFromOtherHosts(address))
        {
            log.Error($"--listen {listen}: {whatComesIn} from other hosts need --tls-dir DIR (mutual TLS); over plain TCP anyone who " +
                      "reaches the port could send a VM to run here or read the VMs sent. --insecure listens without TLS anyway (a trusted network only)");
            return null;
        }
        MigrationTls? loaded;
        try
        {
            loaded = tlsDir is null ? null : MigrationTls.Load(tlsDir);
        }
        catch (ConfigurationException e)
        {
            log.Error($"--tls-dir {tlsDir}: {e.Message}");
            return null;
        }
        var listener = new TcpListener(address, port);
        try
        {
            listener.Start();
        }
        catch (SocketException e)
        {
            loaded?.Dispose();
            log.Error($"--listen {listen}: {e.Message}");
            return null;
        }
        return new IncomingListener(listener, loaded);
    }

    /// <summary>Whether a listener on <paramref name="address"/> takes connections from other hosts: anything
    /// but loopback (127.0.0.0/8, ::1, and 127.x written as an IPv4-mapped IPv6 address).</summary>
    public static bool ReachableFromOtherHosts(IPAddress address) =>
        !IPAddress.IsLoopback(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address);

    public void Dispose()
    {
        listener.Stop();
        tls?.Dispose();
    }
}
