using System.Net;
using System.Net.Sockets;

namespace Vmm.Tests.EndToEnd;

/// <summary>A TCP forwarder that damages a migration in transit: after <paramref name="afterBytes"/> bytes
/// from the source it either flips one bit and forwards on, or cuts both connections. A migration over several
/// connections is forwarded whole, and only the one accepted as <paramref name="faultyConnection"/> (0: the
/// first, which carries the Hello) is damaged.</summary>
public sealed class TcpFaultProxy : IDisposable
{
    public enum Fault { FlipBit, Truncate }

    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly Task _task;

    public TcpFaultProxy(int targetPort, long afterBytes, Fault fault, int faultyConnection = 0)
    {
        _listener.Start();
        _task = Task.Run(() => AcceptAll(targetPort, afterBytes, fault, faultyConnection));
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    private async Task AcceptAll(int targetPort, long afterBytes, Fault fault, int faultyConnection)
    {
        var forwarding = new List<Task>();
        try
        {
            for (int n = 0; ; n++)
            {
                var source = await _listener.AcceptSocketAsync();
                forwarding.Add(Forward(source, targetPort, n == faultyConnection ? afterBytes : long.MaxValue, fault));
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // The listener stopped.
        }
        await Task.WhenAll(forwarding);
    }

    private static async Task Forward(Socket accepted, int targetPort, long afterBytes, Fault fault)
    {
        using var source = accepted;
        using var target = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await target.ConnectAsync(IPAddress.Loopback, targetPort);
        var back = CopyAsync(target, source, long.MaxValue, fault);
        await CopyAsync(source, target, afterBytes, fault);
        source.Close();
        target.Close();
        try { await back; } catch (SocketException) { } catch (ObjectDisposedException) { }
    }

    private static async Task CopyAsync(Socket from, Socket to, long afterBytes, Fault fault)
    {
        var buffer = new byte[64 << 10];
        long forwarded = 0;
        bool flipped = false;
        try
        {
            int read;
            while ((read = await from.ReceiveAsync(buffer)) > 0)
            {
                if (!flipped && forwarded + read > afterBytes)
                {
                    if (fault == Fault.Truncate)
                    {
                        await to.SendAsync(buffer.AsMemory(0, (int)(afterBytes - forwarded)));
                        return;
                    }
                    buffer[afterBytes - forwarded] ^= 0x10;
                    flipped = true;
                }
                await to.SendAsync(buffer.AsMemory(0, read));
                forwarded += read;
            }
        }
        catch (SocketException) { }
    }

    public void Dispose()
    {
        _listener.Stop();
        _task.Wait(TimeSpan.FromSeconds(10));
    }
}
