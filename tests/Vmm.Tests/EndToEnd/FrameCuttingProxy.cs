using System.Net;
using System.Net.Sockets;
using Vmm.Migration;

namespace Vmm.Tests.EndToEnd;

/// <summary>A TCP forwarder between a migration source and its target that reads every frame both ways and asks the
/// test about each before it goes on: the test may hold it up (wait), do something at that very step (kill a side),
/// or cut the link there: that frame is lost, nothing more passes, and both ends see their connection close. The last
/// packet of a protocol step lost, made certain. Connections after the cut (a source in doubt asking its target) pass
/// untouched.</summary>
internal sealed class FrameCuttingProxy : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _targetPort;
    private readonly Func<MigrationFrameType, bool, bool> _forward;
    private readonly List<Task> _connections = [];
    private readonly Task _accepting;
    private int _cut;

    /// <param name="forward">Gets each frame's type and whether it comes from the source, before it goes on; false cuts
    /// the link there (the first time; from then on everything passes).</param>
    public FrameCuttingProxy(int targetPort, Func<MigrationFrameType, bool, bool> forward)
    {
        (_targetPort, _forward) = (targetPort, forward);
        _listener.Start();
        _accepting = Task.Run(Accept);
    }

    /// <summary>Cuts the link at the first frame of type <paramref name="cutAt"/> going the way <paramref name="fromSource"/> says.</summary>
    public FrameCuttingProxy(int targetPort, MigrationFrameType cutAt, bool fromSource)
        : this(targetPort, (type, source) => type != cutAt || source != fromSource)
    {
    }

    public string Address => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    /// <summary>Whether the link was cut.</summary>
    public bool Cut => Volatile.Read(ref _cut) == 1;

    private async Task Accept()
    {
        while (true)
        {
            Socket source;
            try
            {
                source = await _listener.AcceptSocketAsync();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }
            // Threads of their own: each blocks for the whole migration, and a starved thread pool must not delay a frame.
            lock (_connections) _connections.Add(Task.Factory.StartNew(() => Forward(source), TaskCreationOptions.LongRunning));
        }
    }

    private void Forward(Socket source)
    {
        using var _ = source;
        using var target = new Socket(SocketType.Stream, ProtocolType.Tcp);
        try
        {
            target.Connect(IPAddress.Loopback, _targetPort);
        }
        catch (SocketException)
        {
            // The target is gone: the source finds its connection closed, as it would finding nobody there.
            return;
        }
        var back = Task.Factory.StartNew(() => Pass(target, source, fromSource: false), TaskCreationOptions.LongRunning);
        Pass(source, target, fromSource: true);
        back.Wait();
    }

    private void Pass(Socket from, Socket to, bool fromSource)
    {
        using var input = new NetworkStream(from, ownsSocket: false);
        using var output = new NetworkStream(to, ownsSocket: false);
        var reader = new MigrationChannel(input);
        var writer = new MigrationChannel(output);
        byte[] buffer = new byte[1 << 20];
        try
        {
            while (true)
            {
                var (type, payload) = reader.Receive(ref buffer);
                if (!Cut && !_forward(type, fromSource) && Interlocked.Exchange(ref _cut, 1) == 0)
                {
                    from.Shutdown(SocketShutdown.Both);
                    to.Shutdown(SocketShutdown.Both);
                    return;
                }
                writer.Send(type, payload.Span);
                writer.Flush();
            }
        }
        catch (Exception e) when (e is MigrationException or IOException or SocketException or ObjectDisposedException)
        {
            // One side hung up (or the link was cut the other way): pass that on.
            try { to.Shutdown(SocketShutdown.Send); }
            catch (Exception) { }
        }
    }

    public void Dispose()
    {
        _listener.Stop();
        _accepting.Wait(TimeSpan.FromSeconds(10));
        Task[] connections;
        lock (_connections) connections = [.. _connections];
        Task.WaitAll(connections, TimeSpan.FromSeconds(30));
    }
}
