using System.Net;
using System.Net.Sockets;
using Vmm.Diagnostics;

namespace Vmm.Migration;

/// <summary>What the migration daemon and the standby share on their listening port: the accept loop (a failed
/// accept, out of file descriptors or aborted, leaves it listening), a bound on the connections still waiting for
/// their first frame, so that silent peers cost at most that many threads and can never take the place of a real one,
/// the refusal of a peer beyond it (<see cref="ConnectionRefusals"/>), and one thread per connection it takes in, each
/// a failure boundary of its own: what goes wrong on it ends that connection only.</summary>
public sealed class IncomingConnections(TcpListener listener, Logger log, string logPrefix, string busyWords)
{
    /// <summary>How long a peer has for its TLS handshake and its whole first frame (a Hello, a Join, a question),
    /// however slowly its bytes come.</summary>
    public static readonly TimeSpan FirstFrameDeadline = TimeSpan.FromSeconds(5);

    private readonly ConnectionRefusals _refusals = new();
    private readonly List<IncomingConnection> _open = [];
    private readonly CountdownEvent _running = new(1);
    private int _awaitingFirstFrame;
    private volatile bool _stopping;

    public EndPoint? LocalEndpoint => listener.LocalEndpoint;

    /// <summary>Takes connections until <see cref="Stop"/>. Each is refused ("the target is busy: ...", in the
    /// daemon's words) with what <paramref name="busy"/> says (null: not busy), or when <paramref name="maxAwaitingFirstFrame"/> wait for their first frame already;
    /// otherwise <paramref name="receive"/> runs on a thread of its own, and the connection is closed after it.</summary>
    public void AcceptUntilStopped(int maxAwaitingFirstFrame, Func<string?> busy, Action<IncomingConnection> receive, string threadName)
    {
        for (int n = 1; ; n++)
        {
            Socket socket;
            try
            {
                socket = listener.AcceptSocket();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException)
            {
                if (_stopping) return;
                // Out of file descriptors, a connection aborted before it was taken: the next one may do.
                log.Warning($"{logPrefix}accepting a connection failed ({e.Message}); still listening");
                Thread.Sleep(100);
                continue;
            }
            try
            {
                Take(socket, n, maxAwaitingFirstFrame, busy, receive, threadName);
            }
            catch (Exception e)
            {
                // The accept loop is a failure boundary too: a connection it could not take in ends only that one.
                log.Error($"{logPrefix}connection {n} could not be taken in: {(e is VmmException ? e.Message : $"internal error in vmm: {e}")}");
                socket.Dispose();
            }
        }
    }

    private void Take(Socket socket, int n, int maxAwaitingFirstFrame, Func<string?> busy, Action<IncomingConnection> receive, string threadName)
    {
        string? refusal = busy();
        if (refusal is null && Interlocked.Increment(ref _awaitingFirstFrame) > maxAwaitingFirstFrame)
        {
            Interlocked.Decrement(ref _awaitingFirstFrame);
            refusal = $"{maxAwaitingFirstFrame} connections are already waiting to begin; try again";
        }
        if (refusal is not null)
        {
            log.Warning($"{logPrefix}connection {n} from {socket.RemoteEndPoint} refused: {refusal}");
            _refusals.Refuse(socket, $"{busyWords}: {refusal}");
            return;
        }
        var connection = new IncomingConnection(socket, n, this);
        lock (_open) _open.Add(connection);
        _running.AddCount();
        new Thread(() =>
        {
            try
            {
                receive(connection);
            }
            catch (Exception e)
            {
                log.Error($"{logPrefix}connection {n} from {connection.Source} ended by an internal error in vmm: {e}");
            }
            finally
            {
                connection.Close();
                lock (_open) _open.Remove(connection);
                _running.Signal();
            }
        }) { Name = $"{threadName}-{n}", IsBackground = true }.Start();
    }

    internal void FirstFrameRead() => Interlocked.Decrement(ref _awaitingFirstFrame);

    /// <summary>Ends the accept loop.</summary>
    public void Stop()
    {
        _stopping = true;
        listener.Stop();
    }

    /// <summary>Closes every connection still being received (a signal: what is coming in is given up).</summary>
    public void CloseAll()
    {
        lock (_open)
            foreach (var connection in _open) connection.Socket.Dispose();
    }

    /// <summary>After <see cref="Stop"/>: waits until every connection's thread has ended.</summary>
    public void WaitForConnections()
    {
        _running.Signal();
        _running.Wait();
    }
}
