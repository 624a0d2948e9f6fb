using System.Net.Sockets;
using Vmm.Diagnostics;

namespace Vmm.Control;

/// <summary>A unix socket that takes one JSON request per line and writes one answer line each (after any
/// progress lines): the transport under a VM's control socket and the migration daemon's. Each client is served
/// on its own thread; whatever ends a connection (the client going away, a request over 64 KiB) ends only it,
/// and a handler that throws answers that request with an error. A stale socket file (no one answering) is
/// replaced; a live one is an error, so two servers never share a path.</summary>
public sealed class JsonLineServer : IDisposable
{
    private const int MaxRequestBytes = 64 * 1024;

    /// <summary>Answers one request line. <c>progress</c> writes an intermediate line to the client.</summary>
    public delegate byte[] Handler(ReadOnlySpan<byte> request, Action<byte[]> progress);

    private readonly Socket _listener;
    private readonly string _path;
    private readonly Handler _handler;
    private readonly Logger _log;
    private readonly List<Socket> _clients = [];
    private readonly CountdownEvent _serving = new(1);
    private volatile bool _closed;

    private JsonLineServer(Socket listener, string path, Handler handler, Logger log, string threadName)
    {
        _listener = listener;
        _path = path;
        _handler = handler;
        _log = log;
        new Thread(AcceptLoop) { Name = threadName, IsBackground = true }.Start();
    }

    public static JsonLineServer Start(string path, Handler handler, Logger log, string threadName)
    {
        if (File.Exists(path) || Directory.Exists(path))
        {
            if (IsAnswering(path)) throw new IOException($"{path} is the control socket of a running vmm");
            File.Delete(path);
        }
        // Its directory too: sockets live under /run, which a reboot empties.
        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } directory) Directory.CreateDirectory(directory);
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(8);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        return new JsonLineServer(listener, path, handler, log, threadName);
    }

    private static bool IsAnswering(string path)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private void AcceptLoop()
    {
        while (!_closed)
        {
            Socket client;
            try
            {
                client = _listener.Accept();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                if (_closed) return;
                // Out of file descriptors, a client gone before it was taken: the next one may do.
                _log.Warning($"control socket: accepting a connection failed ({e.Message})");
                Thread.Sleep(100);
                continue;
            }
            lock (_clients)
            {
                if (_closed)
                {
                    client.Dispose();
                    return;
                }
                _clients.Add(client);
                _serving.AddCount();
            }
            new Thread(() => Serve(client)) { Name = "control-client", IsBackground = true }.Start();
        }
    }

    /// <summary>One client connection: requests in turn until it closes.</summary>
    private void Serve(Socket client)
    {
        try
        {
            using var stream = new NetworkStream(client, ownsSocket: false);
            while (ReadLine(stream) is { } request)
            {
                byte[] answer;
                try
                {
                    answer = _handler(request, line => stream.Write(line));
                }
                catch (Exception e)
                {
                    // A bug behind one request must not take down what this socket controls.
                    _log.Error($"control request failed: internal error in vmm: {e}");
                    answer = JsonAnswers.Error($"internal error in vmm: {e.Message}");
                }
                stream.Write(answer);
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException)
        {
            // The client went away (or the server is closing); nothing to answer.
        }
        finally
        {
            lock (_clients) _clients.Remove(client);
            client.Dispose();
            _serving.Signal();
        }
    }

    /// <summary>One request line (without its newline), or null at the end of the stream.</summary>
    private static byte[]? ReadLine(Stream stream)
    {
        var line = new MemoryStream();
        int b;
        while ((b = stream.ReadByte()) >= 0)
        {
            if (b == '\n') return line.ToArray();
            if (line.Length == MaxRequestBytes) throw new IOException("control request longer than 64 KiB");
            line.WriteByte((byte)b);
        }
        return line.Length > 0 ? line.ToArray() : null;
    }

    /// <summary>Stops taking requests, ends every connection, and returns once no request is being served any
    /// more: work in progress finishes before the caller releases what it works on.</summary>
    public void Dispose()
    {
        lock (_clients)
        {
            if (_closed) return;
            _closed = true;
            // Shutdown wakes a thread blocked reading a request; a request being served finishes first.
            foreach (var client in _clients)
            {
                try { client.Shutdown(SocketShutdown.Receive); }
                catch (SocketException) { }
            }
        }
        _listener.Dispose();
        _serving.Signal();
        _serving.Wait();
        _serving.Dispose();
        try { File.Delete(_path); }
        catch (IOException) { }
    }
}
