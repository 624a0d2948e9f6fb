using System.Net;
using System.Net.Sockets;
using System.Text;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Replication;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Migration;

/// <summary>The two daemons' admission, in-process (no VM needed): connections that never say anything may take the
/// places of those waiting for their first frame, never more, and the next is told in words why it is turned away;
/// at the first-frame deadline the silent ones are dropped, and the daemon takes connections in again.</summary>
public sealed class DaemonAdmissionTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-admission-").FullName;
    private readonly StringWriter _logText = new();
    private readonly Logger _log;
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly List<Socket> _silent = [];

    public DaemonAdmissionTests()
    {
        _log = new Logger(TextWriter.Synchronized(_logText), LogLevel.Debug);
        _listener.Start();
    }

    private int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    public void Dispose()
    {
        foreach (var socket in _silent) socket.Dispose();
        _listener.Stop();
        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public void MigrationDaemon_SilentPeersFillOnlyTheirPlaces_TheNextIsToldTheTargetIsBusy_AndAfterTheDeadlineItAnswersAgain()
    {
        var daemon = new MigrationDaemon(new MigrationDaemonSettings { MaxIncoming = 1, Host = new MachineConfig { SerialOutput = Stream.Null } }, _listener, null, _log);
        var run = RunOnItsThread(daemon.Run);

        int places = 1 * MigrationDaemon.MaxAwaitingFirstFrame;
        OpenSilentConnections(places);
        Assert.Equal($"the target is busy: {places} connections are already waiting to begin; try again", RefusalOfTheNextConnection());

        AssertTheSilentOnesAreDroppedAtTheDeadline();
        // A dropped connection is counted out once its thread has closed it, just after the client sees the end: until
        // then a question may still be turned away. It is answered within the patience.
        string why = "";
        var deadline = DateTime.UtcNow + Patience;
        while (!why.Contains("has no record of the migration") && DateTime.UtcNow < deadline)
            new MigrationLocate(UInt128.One, "vm").Ask($"127.0.0.1:{Port}", null, Patience, _log, out why);
        Assert.True(why.Contains("has no record of the migration"), why + "\n" + _logText);

        daemon.Stop(VmStop.BySignal("SIGTERM", 15));
        Assert.Equal(ExitCodes.Signal(15), run());
    }

    [Fact]
    public void StandbyDaemon_SilentPeersFillOnlyTheirPlaces_TheNextIsToldTheStandbyIsBusy_AndNothingItHoldsChanges()
    {
        var settings = new StandbySettings { DiskDir = _directory, Host = new MachineConfig { SerialOutput = Stream.Null } };
        var standby = new StandbyDaemon(settings, _listener, null, _log);
        var run = RunOnItsThread(standby.Run);

        OpenSilentConnections(StandbyDaemon.MaxAwaitingHello);
        Assert.Equal($"the standby is busy: {StandbyDaemon.MaxAwaitingHello} connections are already waiting to begin; try again", RefusalOfTheNextConnection());
        Assert.Equal("waiting", standby.Status().Phase);

        AssertTheSilentOnesAreDroppedAtTheDeadline();
        Assert.Equal("waiting", standby.Status().Phase);
        Assert.Equal("there is no replica waiting for a failover here", standby.Failover());

        standby.Stop(VmStop.BySignal("SIGTERM", 15));
        Assert.Equal(ExitCodes.Signal(15), run());
    }

    /// <summary>Runs a daemon as its host does, on a thread of its own; the returned function waits for its exit code.</summary>
    private Func<int> RunOnItsThread(Func<int> daemonRun)
    {
        int exitCode = -1;
        var thread = new Thread(() => exitCode = daemonRun()) { IsBackground = true };
        thread.Start();
        return () =>
        {
            Assert.True(thread.Join(Patience), "the daemon did not end:\n" + _logText);
            return exitCode;
        };
    }

    /// <summary>Opens connections that send nothing; the daemon takes them in in order, before any opened later.</summary>
    private void OpenSilentConnections(int count)
    {
        for (int i = 0; i < count; i++)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Connect(IPAddress.Loopback, Port);
            _silent.Add(socket);
        }
    }

    /// <summary>What the daemon answers a connection beyond the bound: its Error frame's text.</summary>
    private string RefusalOfTheNextConnection()
    {
        using var client = new TcpClient();
        client.Connect(IPAddress.Loopback, Port);
        client.ReceiveTimeout = (int)Patience.TotalMilliseconds;
        var channel = new MigrationChannel(client.GetStream());
        byte[] buffer = new byte[4096];
        var (type, payload) = channel.Receive(ref buffer);
        Assert.Equal(MigrationFrameType.Error, type);
        return Encoding.UTF8.GetString(payload.Span);
    }

    /// <summary>Each silent connection is closed by the daemon once the deadline passed: its read sees the end, or a
    /// reset (a socket closed while a read waits on it may go out that way); never a time-out.</summary>
    private void AssertTheSilentOnesAreDroppedAtTheDeadline()
    {
        foreach (var socket in _silent)
        {
            socket.ReceiveTimeout = (int)Patience.TotalMilliseconds;
            try
            {
                Assert.Equal(0, socket.Receive(new byte[1]));
            }
            catch (SocketException e)
            {
                Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);
            }
        }
    }
}
