using System.Net;
using System.Net.Sockets;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Vm;

namespace Vmm.Tests.Migration;

/// <summary>A migration target inside the test process: a TCP listener on loopback. Its first connection with a
/// Hello is received by <see cref="MigrationReceiver"/> into a new machine, which then runs; connections that join
/// that migration (several connections) are each served on their own thread, as the daemon does.</summary>
internal sealed class LoopbackMigration : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly Logger _log;
    private readonly string? _diskDirectory;
    private readonly TaskCompletionSource<(Machine, Task<VmStop>)> _target = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<Task> _connections = [];
    private readonly Task _accepting;

    public LoopbackMigration(Logger log, string? diskDirectory = null)
    {
        _log = log;
        _diskDirectory = diskDirectory;
        _listener.Start();
        _accepting = Task.Run(Accept);
    }

    public string Address => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    /// <summary>The migrations here waiting for, or using, further connections.</summary>
    public MigrationJoins Joins { get; } = new();

    /// <summary>The received machine and its run, or the failure that discarded it.</summary>
    public Task<(Machine Machine, Task<VmStop> Run)> Target => _target.Task;

    /// <summary>Every connection taken so far, ended: served to its end, or failed.</summary>
    public Task AllConnectionsEnded()
    {
        lock (_connections) return Task.WhenAll(_connections.ToArray()).ContinueWith(_ => { });
    }

    private void Accept()
    {
        while (true)
        {
            Socket socket;
            try
            {
                socket = _listener.AcceptSocket();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }
            lock (_connections) _connections.Add(Task.Factory.StartNew(() => Serve(socket), TaskCreationOptions.LongRunning));
        }
    }

    private void Serve(Socket socket)
    {
        using var _ = socket;
        using var stream = new NetworkStream(socket);
        var receiver = new MigrationReceiver(stream, _log, _diskDirectory, Joins, socket);
        try
        {
            if (!receiver.ReadHelloOrServeJoin()) return;
            var machine = receiver.Receive(d => new MachineDestination(MachineBuilder.ForRestore(d.Description.ToConfig(new MachineConfig { SerialOutput = Stream.Null })
                with { DiskImagesOpenedAt = d.DiskImagesOpenedAt }, _log))).Machine;
            try
            {
                receiver.AwaitCommit();
            }
            catch
            {
                machine.Dispose();
                throw;
            }
            var run = Task.Factory.StartNew(machine.Run, TaskCreationOptions.LongRunning);
            receiver.ConfirmResumed();
            _target.TrySetResult((machine, run));
        }
        catch (Exception e)
        {
            _target.TrySetException(e);
        }
    }

    public void Dispose()
    {
        _listener.Stop();
        _accepting.Wait();
    }
}
