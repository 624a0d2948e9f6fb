using System.Net;
using System.Net.Sockets;
using Vmm.Migration;

namespace Vmm.Tests.EndToEnd;

/// <summary>A migration target played by the test: it takes the VM's pages like a real one, then stops
/// answering at a chosen point (after the given pass, or once it has the whole state), holding the
/// connection open until disposed. What a hung or deadlocked target looks like to the source.</summary>
internal sealed class StallingMigrationTarget : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly ManualResetEventSlim _release = new();
    private readonly ManualResetEventSlim _stalled = new();
    private readonly Task _task;

    /// <param name="stallAfterPass">Stop answering once this pass has arrived; null: answer every pass,
    /// take the state, and never confirm that the VM runs.</param>
    public StallingMigrationTarget(int? stallAfterPass)
    {
        _listener.Start();
        _task = Task.Run(() => Serve(stallAfterPass));
    }

    public string Address => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    public bool WaitUntilStalled(TimeSpan timeout) => _stalled.Wait(timeout);

    private void Serve(int? stallAfterPass)
    {
        using var connection = _listener.AcceptSocket();
        using var stream = new NetworkStream(connection);
        var channel = new MigrationChannel(stream);
        byte[] buffer = new byte[1 << 20];
        try
        {
            channel.Receive(ref buffer);
            channel.Send(MigrationFrameType.Ready, []);
            while (true)
            {
                var (type, payload) = channel.Receive(ref buffer);
                if (type == MigrationFrameType.State) break;
                if (type != MigrationFrameType.PassEnd) continue;
                if (BitConverter.ToInt32(payload.Span) == stallAfterPass) break;
                channel.Send(MigrationFrameType.PassDone, payload.Span);
            }
            _stalled.Set();
            _release.Wait();
        }
        catch (Exception e) when (e is MigrationException or IOException) { }
    }

    public void Dispose()
    {
        _release.Set();
        _listener.Stop();
        _task.Wait(TimeSpan.FromSeconds(10));
    }
}
