using System.Diagnostics;
using System.Net.Sockets;

namespace Vmm.Migration;

/// <summary>How the migration and standby daemons turn a peer away: its Error frame says why, sent on a task of its
/// own so the accept loop goes on, and the connection is closed leaving that last word. Refusals in flight are bounded:
/// beyond <see cref="MaxInFlight"/>, a flood of connections is only closed, so it costs no more than that many tasks.</summary>
public sealed class ConnectionRefusals
{
    public const int MaxInFlight = 8;
    private int _inFlight;

    /// <summary>Refuses <paramref name="connection"/> (whose first frame was not read) with <paramref name="why"/>.</summary>
    public void Refuse(Socket connection, string why)
    {
        if (Interlocked.Increment(ref _inFlight) > MaxInFlight)
        {
            Interlocked.Decrement(ref _inFlight);
            connection.Dispose();
            return;
        }
        Task.Run(() =>
        {
            try
            {
                connection.SendTimeout = 1000;
                using (var stream = new NetworkStream(connection, ownsSocket: false))
                {
                    var channel = new MigrationChannel(stream);
                    channel.SendText(MigrationFrameType.Error, why);
                    channel.Flush();
                }
                CloseLeavingTheLastWord(connection);
            }
            catch (Exception e) when (e is MigrationException or IOException or SocketException or ObjectDisposedException)
            {
                // It went away already.
                connection.Dispose();
            }
            finally
            {
                Interlocked.Decrement(ref _inFlight);
            }
        });
    }

    /// <summary>Closes a connection the peer may still be writing to, so that the error just sent reaches it: a socket
    /// closed with unread data resets the connection, and the reset can discard that error before the peer reads it.
    /// So: end our side, read (and drop) what is in flight for a moment, then close.</summary>
    public static void CloseLeavingTheLastWord(Socket connection)
    {
        try
        {
            connection.Shutdown(SocketShutdown.Send);
            connection.ReceiveTimeout = 200;
            byte[] sink = new byte[64 << 10];
            var draining = Stopwatch.StartNew();
            while (draining.Elapsed < TimeSpan.FromSeconds(1) && connection.Receive(sink) > 0) { }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Closed or reset already: nothing more to leave.
        }
        finally
        {
            connection.Dispose();
        }
    }
}
