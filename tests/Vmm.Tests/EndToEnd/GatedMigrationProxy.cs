using System.Net;
using System.Net.Sockets;
using Vmm.Migration;

namespace Vmm.Tests.EndToEnd;

/// <summary>A TCP forwarder between a migration source and its target that holds each answer of the target
/// (Ready, PassDone, ...) until the test lets it through: <paramref name="beforeAnswer"/> runs, and may wait,
/// before each one is forwarded. The source waits for every pass's PassDone before it looks at the dirty
/// pages again, so a test decides how much the guest writes between two looks, instead of hoping the link is
/// slow enough. The source's own bytes flow as they come. A held answer trickles out a byte at a time, so the source's
/// read timeout does not end the migration while the test waits (for a frame of n bytes, about n × 10 s).</summary>
internal sealed class GatedMigrationProxy : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly Task _task;

    /// <param name="beforeAnswer">Gets the answer's type and, for PassDone, the pass number.</param>
    public GatedMigrationProxy(int targetPort, Action<MigrationFrameType, int> beforeAnswer)
    {
        _listener.Start();
        _task = Task.Run(() => Forward(targetPort, beforeAnswer));
    }

    public string Address => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    private async Task Forward(int targetPort, Action<MigrationFrameType, int> beforeAnswer)
    {
        using var source = await _listener.AcceptSocketAsync();
        using var target = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await target.ConnectAsync(IPAddress.Loopback, targetPort);
        // Blocking reads and the test's gate on threads of their own: under the whole suite the thread pool can be starved
        // for a long while, and a gate run from it came 90 s late.
        var answers = Task.Factory.StartNew(() => ForwardAnswers(target, source, beforeAnswer), TaskCreationOptions.LongRunning);
        var buffer = new byte[64 << 10];
        try
        {
            int read;
            while ((read = await source.ReceiveAsync(buffer)) > 0) await target.SendAsync(buffer.AsMemory(0, read));
        }
        catch (SocketException) { }
        target.Shutdown(SocketShutdown.Send);
        await answers;
    }

    private static void ForwardAnswers(Socket target, Socket source, Action<MigrationFrameType, int> beforeAnswer)
    {
        using var fromTarget = new NetworkStream(target, ownsSocket: false);
        using var toSource = new NetworkStream(source, ownsSocket: false);
        var reader = new MigrationChannel(fromTarget);
        byte[] buffer = new byte[4096];
        try
        {
            while (true)
            {
                var (type, payload) = reader.Receive(ref buffer);
                int pass = type == MigrationFrameType.PassDone ? BitConverter.ToInt32(payload.Span) : 0;
                byte[] frame = Frame(type, payload.Span);
                var gate = Task.Factory.StartNew(() => beforeAnswer(type, pass), TaskCreationOptions.LongRunning);
                // The source reads each answer with a 30 s timeout, and a guest held up by a loaded host can take longer
                // than that to reach what the test waits for: a byte of the answer every few seconds keeps the read
                // alive (each byte that arrives completes one), for as many bytes as the frame has but its last.
                int sent = 0;
                while (!gate.Wait(TrickleEvery) && sent < frame.Length - 1) toSource.Write(frame, sent++, 1);
                gate.GetAwaiter().GetResult();
                toSource.Write(frame, sent, frame.Length - sent);
            }
        }
        catch (MigrationException)
        {
            // One side hung up: the migration is over.
            try { source.Shutdown(SocketShutdown.Both); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        }
    }

    private static readonly TimeSpan TrickleEvery = TimeSpan.FromSeconds(10);

    /// <summary>The bytes a MigrationChannel puts on the wire for one frame.</summary>
    private static byte[] Frame(MigrationFrameType type, ReadOnlySpan<byte> payload)
    {
        using var bytes = new MemoryStream();
        var channel = new MigrationChannel(bytes);
        channel.Send(type, payload);
        channel.Flush();
        return bytes.ToArray();
    }

    public void Dispose()
    {
        _listener.Stop();
        _task.Wait(TimeSpan.FromSeconds(30));
    }
}
