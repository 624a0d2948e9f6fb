using System.Net.Sockets;
using Vmm.Diagnostics;

namespace Vmm.Migration;

/// <summary>A source's connections to its target. The first carries the Hello, the state and every answer that
/// decides the migration; with several, the others join it with the token of the target's Ready (each set up as
/// the first: TLS too) and carry their share of every pass. Closing them (<see cref="CloseAll"/>: the VM stopped,
/// the time limit) ends every send and read that blocks on any of them.</summary>
internal sealed class OutgoingConnections : IDisposable
{
    private readonly string _host, _target, _listener;
    private readonly int _port;
    private readonly TimeSpan _ioTimeout;
    private readonly MigrationTls? _tls;
    private readonly List<Socket> _sockets = [];
    private readonly List<Stream> _streams = [];
    private readonly List<MigrationChannel> _channels = [];
    private bool _closed;

    /// <summary>Connects the first connection (a <see cref="MigrationException"/> when nothing listens there).</summary>
    /// <param name="listener">What should listen there, for the error when nothing does.</param>
    public OutgoingConnections(string host, int port, string target, TimeSpan ioTimeout, MigrationTls? tls, string listener = "vmm migrate-receive --listen")
    {
        (_host, _port, _target, _ioTimeout, _tls, _listener) = (host, port, target, ioTimeout, tls, listener);
        MainSocket = Connect();
        _sockets.Add(MainSocket);
    }

    public Socket MainSocket { get; }

    /// <summary>The channel of each connection that is set up; the first one's is the main channel.</summary>
    public IReadOnlyList<MigrationChannel> Channels => _channels;

    public MigrationChannel Main => _channels[0];

    public long BytesSent => _channels.Sum(c => c.BytesSent);

    /// <summary>Sets up the first connection's stream (the TLS handshake, where there is TLS).</summary>
    public MigrationChannel OpenMain(Logger log)
    {
        var stream = OpenStream(MainSocket);
        if (stream is System.Net.Security.SslStream session) log.Info($"migration: mutual TLS ({session.SslProtocol}) with the target {session.RemoteCertificate?.Subject}");
        return _channels[0];
    }

    /// <summary>Opens the further connections; each joins with <paramref name="token"/> and is taken (the target
    /// answered Ready) before this returns.</summary>
    public void Join(UInt128 token, int connections)
    {
        for (int index = 1; index < connections; index++)
        {
            var socket = Connect();
            lock (_sockets)
            {
                _sockets.Add(socket);
                // Closed meanwhile: this one must not outlive the others.
                if (_closed) socket.Dispose();
            }
            OpenStream(socket);
            var channel = _channels[index];
            channel.Send(MigrationFrameType.Join, new MigrationJoin(token, index).ToBytes());
            channel.Flush();
            ExpectFrame(channel, MigrationFrameType.Ready, $"the target did not take connection {index}");
        }
    }

    /// <summary>Ends pass <paramref name="pass"/> on every connection and returns once each said the target wrote
    /// all it carried: the next pass may resend a page on another connection only after its older copy landed.</summary>
    public void EndPass(int pass)
    {
        foreach (var channel in _channels)
        {
            channel.Send(MigrationFrameType.PassEnd, BitConverter.GetBytes(pass));
            channel.Flush();
        }
        foreach (var channel in _channels) ExpectFrame(channel, MigrationFrameType.PassDone, $"the target did not finish pass {pass}");
    }

    /// <summary>Reads the answer the target must give now; returns its payload.</summary>
    public static ReadOnlySpan<byte> ExpectFrame(MigrationChannel channel, MigrationFrameType expected, string context)
    {
        byte[] buffer = new byte[4096];
        var (type, payload) = channel.Receive(ref buffer);
        if (type == expected) return payload.Span;
        string detail = type == MigrationFrameType.Error ? System.Text.Encoding.UTF8.GetString(payload.Span) : $"unexpected {type} frame";
        throw new MigrationException($"{context}: {detail}");
    }

    /// <summary>The connections broke: a target that refused the VM (busy, a page it would not take) said why
    /// on one of them before it closed, and the reason may still be waiting to be read.</summary>
    public string? TargetsLastWord()
    {
        for (int i = 0; i < _channels.Count; i++)
        {
            try
            {
                _sockets[i].ReceiveTimeout = 1000;
                byte[] buffer = new byte[4096];
                for (int frames = 0; frames < 64; frames++)
                {
                    var (type, payload) = _channels[i].Receive(ref buffer);
                    if (type == MigrationFrameType.Error) return System.Text.Encoding.UTF8.GetString(payload.Span);
                }
            }
            catch (Exception e) when (e is MigrationException or SocketException or ObjectDisposedException)
            {
                // Nothing more to read on this one.
            }
        }
        return null;
    }

    /// <summary>Closes every connection, from any thread.</summary>
    public void CloseAll()
    {
        lock (_sockets)
        {
            _closed = true;
            foreach (var socket in _sockets) socket.Dispose();
        }
    }

    public void Dispose()
    {
        foreach (var stream in _streams) stream.Dispose();
        CloseAll();
    }

    private Stream OpenStream(Socket socket)
    {
        var stream = _tls?.AuthenticateTarget(socket, _host) ?? new NetworkStream(socket, ownsSocket: false);
        _streams.Add(stream);
        // Unbuffered: frames are large (a 9-byte header, then up to 1 MiB written as one call), and a buffer
        // would only add a copy of every page.
        _channels.Add(new MigrationChannel(stream));
        return stream;
    }

    private Socket Connect()
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            socket.SendBufferSize = 4 << 20;
            socket.SendTimeout = socket.ReceiveTimeout = (int)_ioTimeout.TotalMilliseconds;
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
            using var cancel = new CancellationTokenSource(_ioTimeout);
            socket.ConnectAsync(_host, _port, cancel.Token).AsTask().GetAwaiter().GetResult();
            return socket;
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            socket.Dispose();
            throw new MigrationException($"cannot connect to {_target}: {e.Message} (is '{_listener}' running there?)");
        }
    }
}
