using System.Net;
using System.Net.Sockets;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Vm;

namespace Vmm.Tests.Migration;

/// <summary>A migration target inside the test process: a TCP listener on loopback whose one connection is
/// received by <see cref="MigrationReceiver"/> into a new machine, which then runs.</summary>
internal sealed class LoopbackMigration : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly Logger _log;

    public LoopbackMigration(Logger log)
    {
        _log = log;
        _listener.Start();
        Target = Task.Run(ReceiveAndRun);
    }

    public string Address => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    /// <summary>The received machine and its run, or the failure that discarded it.</summary>
    public Task<(Machine Machine, Task<VmStop> Run)> Target { get; }

    private (Machine, Task<VmStop>) ReceiveAndRun()
    {
        using var socket = _listener.AcceptSocket();
        using var stream = new NetworkStream(socket);
        var receiver = new MigrationReceiver(stream, _log);
        var machine = receiver.Receive(d => new MachineDestination(MachineBuilder.ForRestore(d.ToConfig(new MachineConfig { SerialOutput = Stream.Null }), _log))).Machine;
        var run = Task.Factory.StartNew(machine.Run, TaskCreationOptions.LongRunning);
        receiver.ConfirmResumed();
        return (machine, run);
    }

    public void Dispose() => _listener.Stop();
}
