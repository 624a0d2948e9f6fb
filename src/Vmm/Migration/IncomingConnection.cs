using System.Net.Sockets;

namespace Vmm.Migration;

/// <summary>One connection a daemon took in, until it proves what it is: its place among those waiting for their first
/// frame, and the deadline for that frame (<see cref="IncomingConnections.FirstFrameDeadline"/>), past which the socket
/// is closed, which ends whatever read is waiting on it.</summary>
public sealed class IncomingConnection
{
    private readonly IncomingConnections _owner;
    private readonly Timer _deadline;
    private int _awaiting = 1, _closed;

    internal IncomingConnection(Socket socket, int number, IncomingConnections owner)
    {
        Socket = socket;
        Number = number;
        Source = socket.RemoteEndPoint?.ToString() ?? "?";
        _owner = owner;
        _deadline = new Timer(_ => { FirstFrameLate = true; socket.Dispose(); }, null, IncomingConnections.FirstFrameDeadline, Timeout.InfiniteTimeSpan);
    }

    public Socket Socket { get; }
    /// <summary>The how-manyth connection of this daemon, for its logs.</summary>
    public int Number { get; }
    public string Source { get; }
    /// <summary>The first frame did not come in time: the socket was closed, and that is why what followed failed.</summary>
    public bool FirstFrameLate { get; private set; }

    /// <summary>The first frame is in: the deadline no longer applies, and the connection no longer counts among those
    /// waiting. Throws if the deadline had passed already (the frame read is then whatever came before the close).</summary>
    public void FirstFrameRead()
    {
        _deadline.Change(Timeout.Infinite, Timeout.Infinite);
        if (Interlocked.Exchange(ref _awaiting, 0) == 1) _owner.FirstFrameRead();
        if (FirstFrameLate) throw new MigrationException(LateReason);
    }

    public string LateReason => $"no valid Hello within {IncomingConnections.FirstFrameDeadline.TotalSeconds:0} s";

    /// <summary>Why this connection failed, in words for a log: the deadline when that is what closed it.</summary>
    public string Describe(Exception e) => FirstFrameLate ? LateReason : e is VmmException ? e.Message : $"internal error in vmm: {e}";

    /// <summary>Closes the connection, leaving the last frame sent to reach the peer; once.</summary>
    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) == 1) return;
        _deadline.Dispose();
        if (Interlocked.Exchange(ref _awaiting, 0) == 1) _owner.FirstFrameRead();
        ConnectionRefusals.CloseLeavingTheLastWord(Socket);
    }
}
