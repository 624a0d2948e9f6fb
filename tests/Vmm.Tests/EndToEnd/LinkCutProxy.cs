using System.Net;
using System.Net.Sockets;

namespace Vmm.Tests.EndToEnd;

/// <summary>A TCP proxy in front of one port that forwards both ways until told to cut the link: <see cref="Silence"/>
/// stops forwarding and keeps the connections open (a partitioned network: both ends just hear nothing), and
/// <see cref="Close"/> closes them (a host that died: both ends see the connection end).</summary>
public sealed class LinkCutProxy : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _targetPort;
    private readonly List<Socket> _sockets = [];
    private volatile bool _silent;

    public LinkCutProxy(int targetPort)
    {
        _targetPort = targetPort;
        _listener.Start();
        _ = Task.Run(AcceptLoop);
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;
    public string Address => $"127.0.0.1:{Port}";

    /// <summary>Bytes forwarded so far, both ways.</summary>
    public long BytesForwarded => Interlocked.Read(ref _bytes);
    private long _bytes;

    public void Silence() => _silent = true;

    public void Close()
    {
        lock (_sockets)
        {
            foreach (var socket in _sockets) socket.Dispose();
            _sockets.Clear();
        }
    }

    private async Task AcceptLoop()
    {
        while (true)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptSocketAsync();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }
            var server = new Socket(SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await server.ConnectAsync(IPAddress.Loopback, _targetPort);
            }
            catch (SocketException)
            {
                client.Dispose();
                server.Dispose();
                continue;
            }
            lock (_sockets) _sockets.AddRange([client, server]);
            _ = Task.Run(() => Pump(client, server));
            _ = Task.Run(() => Pump(server, client));
        }
    }

    private async Task Pump(Socket from, Socket to)
    {
        byte[] buffer = new byte[64 << 10];
        try
        {
            while (true)
            {
                int read = await from.ReceiveAsync(buffer);
                if (read == 0) break;
                // Partitioned: what was read is lost, and nothing more is read (the sender's buffers fill up).
                if (_silent) await Task.Delay(Timeout.Infinite, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(10));
                await to.SendAsync(buffer.AsMemory(0, read));
                Interlocked.Add(ref _bytes, read);
            }
            // A partitioned network does not carry the end of a stream either.
            if (!_silent) to.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or TimeoutException)
        {
            // Cut.
        }
    }

    public void Dispose()
    {
        _listener.Stop();
        Close();
    }
}
