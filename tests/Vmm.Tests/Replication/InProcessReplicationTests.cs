using System.Net;
using System.Net.Sockets;
using Vmm.Control;
using Vmm.Diagnostics;
using Vmm.Firmware;
using Vmm.Tests.Integration;
using Vmm.Migration;
using Vmm.Replication;
using Vmm.Tests.EndToEnd;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Replication;

/// <summary>A primary and a standby in one process over loopback TCP (through a proxy that can cut the link): the
/// quick check of epochs, commits and resuming the last committed one (the process tests run the real daemons).</summary>
public sealed class InProcessReplicationTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-repl-").FullName;
    private readonly StringWriter _logText = new();
    private readonly Logger _log;

    public InProcessReplicationTests() => _log = new Logger(TextWriter.Synchronized(_logText), LogLevel.Debug);

    /// <summary>Replicates the primary in 20 ms epochs; returns once the standby committed the first.</summary>
    private ReplicationSource Protected(Machine primary, string standby)
    {
        var replication = ReplicationSource.Start(primary, new ReplicationOptions { Standby = standby, IntervalMs = 20 }, _log);
        replication.WaitUntilProtected();
        return replication;
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private Machine StartCountingGuest(string? diskPath = null)
    {
        string kernel = Path.Combine(_directory, "count.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.CountForever());
        var disks = diskPath is null ? [] : new[] { new Vmm.Devices.Virtio.BlockDiskConfig(diskPath, ReadOnly: false, Id: null) };
        return MachineBuilder.Boot(new MachineConfig { KernelPath = kernel, MemoryBytes = 64UL << 20, SerialOutput = Stream.Null, Name = "counter", Disks = disks }, _log);
    }

    /// <summary>The checksum guest (ticks on its console, pages written at a set rate), booted, not yet run.</summary>
    private Machine StartTickingGuest(DirtyingGuestOptions g, Stream console)
    {
        string kernel = Path.Combine(_directory, "ticks.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.DirtyMemoryWithChecksum(g));
        return MachineBuilder.Boot(new MachineConfig
        {
            KernelPath = kernel, MemoryBytes = FirmwareGuests.DirtyingRegionAddress + ((ulong)g.RegionMiB << 20) + (16UL << 20),
            SerialOutput = console, Name = "ticks",
        }, _log);
    }

    private static ulong Counter(GuestMemoryReader read) => read(FirmwareGuests.CounterAddress);
    private delegate ulong GuestMemoryReader(ulong address);

    /// <summary>One standby taking one stream on a port of its own; the outcome once the stream ends. A read or write
    /// waiting <paramref name="silenceMs"/> ends the stream.</summary>
    private (int Port, Task<StandbyOutcome> Outcome) StartStandby(Action<StandbyReceiver>? onStart = null, TimeSpan fenceTimeout = default, int silenceMs = 5000)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var outcome = Task.Factory.StartNew(() =>
        {
            using var connection = listener.AcceptSocket();
            listener.Stop();
            connection.ReceiveTimeout = connection.SendTimeout = silenceMs;
            using var stream = new NetworkStream(connection);
            var receiver = new StandbyReceiver(new MigrationChannel(stream), _log, _directory + "/standby", TimeSpan.FromSeconds(1), fenceTimeout);
            onStart?.Invoke(receiver);
            return receiver.Run(_ => { });
        }, TaskCreationOptions.LongRunning);
        Directory.CreateDirectory(_directory + "/standby");
        return (port, outcome);
    }

    private static void WaitFor(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting for {what}");
            Thread.Sleep(10);
        }
    }

    [Fact]
    public async Task ThePrimaryLost_TheStandbyResumesTheLastCommittedEpoch_AndTheGuestCountsOn()
    {
        using var primary = StartCountingGuest();
        var run = Task.Factory.StartNew(primary.Run, TaskCreationOptions.LongRunning);
        var (port, outcome) = StartStandby();
        using var link = new LinkCutProxy(port);
        using var replication = Protected(primary, link.Address);
        WaitFor(() => replication.Status.Epoch >= 5, "five epochs");
        Assert.Equal("protected", replication.Status.State);

        link.Close();
        var ended = await outcome;
        ulong onPrimary = primary.Memory.Read<ulong>(FirmwareGuests.CounterAddress);
        Assert.NotNull(ended.Checkpoint);
        using var checkpoint = ended.Checkpoint!;
        Assert.True(checkpoint.Epoch >= 5, $"epoch {checkpoint.Epoch}");
        WaitFor(() => replication.Status.State == "unprotected", "the primary to notice");
        Assert.Null(primary.StopReason);

        using var standby = checkpoint.Resume(new MachineConfig { SerialOutput = Stream.Null, Name = checkpoint.Name }, _log);
        ulong atResume = standby.Memory.Read<ulong>(FirmwareGuests.CounterAddress);
        Assert.InRange(atResume, 1UL, onPrimary);
        var standbyRun = Task.Factory.StartNew(standby.Run, TaskCreationOptions.LongRunning);
        WaitFor(() => standby.Memory.Read<ulong>(FirmwareGuests.CounterAddress) > atResume, "the guest to count on, on the standby");
        standby.RequestStop(VmStop.Error("test over"));
        primary.RequestStop(VmStop.Error("test over"));
        await standbyRun;
        await run;
    }

    /// <summary>The standby cut off (it may still take over, within its failover and fence timeouts), and then the VM
    /// stops: the output the standby never committed stays held until that standby can no longer resume an earlier
    /// epoch, and leaves only then. (It left the moment the VM stopped: issue 18, defect 6.)</summary>
    [Fact]
    public async Task TheStandbyCutOff_ThenTheVmStops_ItsUncommittedOutputWaitsOutTheHold()
    {
        using var primary = StartTickingGuest(new DirtyingGuestOptions(RegionMiB: 4, DirtyMiBPerSecond: 10, GuestTsc.Khz, TickMs: 50, Ticks: 100_000), Stream.Null);
        var run = Task.Factory.StartNew(primary.Run, TaskCreationOptions.LongRunning);
        var (port, _) = StartStandby(fenceTimeout: TimeSpan.FromSeconds(10));
        using var link = new LinkCutProxy(port);
        var replication = Protected(primary, link.Address);
        WaitFor(() => replication.Status.Epoch >= 3, "three epochs");

        link.Close();
        WaitFor(() => replication.Status.State == "losing" && primary.Output.HeldBytes > 0, "the primary losing its standby, with output held");
        primary.RequestStop(VmStop.Error("the guest powered off"));
        await run;
        WaitFor(() => _logText.ToString().Contains("the VM stopped; its"), "the replication noticing the stop");
        long released = primary.Output.ReleasedBytes;

        Assert.Equal("losing", replication.Status.State);
        Assert.True(primary.Output.HeldBytes > 0);
        replication.Dispose();
        Assert.Equal(0, primary.Output.HeldBytes);
        Assert.True(primary.Output.ReleasedBytes > released, "the held output never left after the hold");
        Assert.Equal("unprotected", replication.Status.State);
    }

    /// <summary>What the guest writes during the first full copy goes in passes while it runs, not into the first epoch,
    /// which is copied with the guest paused into memory. The copy is held up (its first pages frame) until the guest has
    /// written 120 ticks' pages: the first catch-up pass takes them (thousands), and the first epoch holds only what
    /// changed after the last pass, fewer than that first pass took. (It held them all: issue 18, defect 9.) Only a
    /// host that took longer from the last pass to the first epoch than the guest's whole 6 s hold could fail it.</summary>
    [Fact]
    public async Task TheFirstEpoch_HoldsWhatChangedSinceTheCatchUp_NotAllTheGuestWroteDuringTheFirstCopy()
    {
        var g = new DirtyingGuestOptions(RegionMiB: 32, DirtyMiBPerSecond: 5, GuestTsc.Khz, TickMs: 50, Ticks: 100_000);
        var console = new MemoryStream();
        var output = Stream.Synchronized(console);
        using var primary = StartTickingGuest(g, output);
        int Ticks() { lock (output) return System.Text.RegularExpressions.Regex.Matches(System.Text.Encoding.ASCII.GetString(console.ToArray()), "tick ").Count; }
        var run = Task.Factory.StartNew(primary.Run, TaskCreationOptions.LongRunning);
        // The standby hears nothing while the copy is held: it must not take that silence for a dead primary.
        var (port, _) = StartStandby(silenceMs: 60_000);
        int heldOnce = 0;
        using var proxy = new FrameCuttingProxy(port, (type, fromSource) =>
        {
            if (!fromSource || type != MigrationFrameType.Pages || Interlocked.Exchange(ref heldOnce, 1) == 1) return true;
            int from = Ticks();
            WaitFor(() => Ticks() >= from + 120, "the guest writing 120 ticks' pages during the first copy");
            return true;
        });
        using var replication = Protected(primary, proxy.Address);
        string log = _logText.ToString();
        var firstEpoch = System.Text.RegularExpressions.Regex.Match(log, @"epoch 1 committed: pause [\d.]+ ms, (\d+) pages");
        var catchUp = System.Text.RegularExpressions.Regex.Match(log, @"then pages changed meanwhile: (\d+)");
        primary.RequestStop(VmStop.Error("test over"));
        await run;

        Assert.True(firstEpoch.Success && catchUp.Success, log);
        long firstPass = long.Parse(catchUp.Groups[1].Value), epochPages = long.Parse(firstEpoch.Groups[1].Value);
        Assert.True(firstPass >= 2560, $"the first catch-up pass took {firstPass} pages, not what the guest wrote during the held copy\n{log}");
        Assert.True(epochPages < firstPass, $"the first epoch held {epochPages} pages, the first catch-up pass {firstPass}\n{log}");
    }

    /// <summary>replicate --no-wait answers while the first full copy is under way (here: a standby that never answers
    /// the Hello), so a cluster action starting the copy of a large VM never runs into its timeout. (The agent's notify,
    /// monitor and demote waited for protection: issue 18, defect 13.)</summary>
    [Fact]
    public async Task ReplicateWithoutWaiting_AnswersWhileTheFirstCopyIsUnderWay()
    {
        using var primary = StartCountingGuest();
        var run = Task.Factory.StartNew(primary.Run, TaskCreationOptions.LongRunning);
        var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        string api = Path.Combine(_directory, "api.sock");
        using (var control = ControlServer.Start(primary, api, _log))
        {
            var answer = ControlSocketClient.Ask(api, new { command = "replicate", to = $"127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}", intervalMs = 20, noWait = true });
            Assert.Contains(answer.GetProperty("replication").GetProperty("state").GetString(), new[] { "connecting", "copying" });
            primary.RequestStop(VmStop.Error("test over"));
            await run;
        }
        silent.Stop();
    }

    [Fact]
    public async Task ThePrimaryStopsReplicating_TheStandbyHoldsNothingToResume()
    {
        using var primary = StartCountingGuest();
        var run = Task.Factory.StartNew(primary.Run, TaskCreationOptions.LongRunning);
        var (port, outcome) = StartStandby();
        var replication = Protected(primary, $"127.0.0.1:{port}");
        replication.Stop();
        var ended = await outcome;
        Assert.Null(ended.Checkpoint);
        Assert.Contains("the primary ended replication", ended.Reason);
        Assert.Equal("unprotected", replication.Status.State);
        Assert.False(primary.Output.IsHolding);
        Assert.Empty(Directory.GetFiles(_directory + "/standby"));
        primary.RequestStop(VmStop.Error("test over"));
        await run;
    }

    [Fact]
    public async Task TheVmStoppingOnThePrimary_TellsTheStandby_WhichHoldsNothingToResume()
    {
        using var primary = StartCountingGuest();
        var run = Task.Factory.StartNew(primary.Run, TaskCreationOptions.LongRunning);
        var (port, outcome) = StartStandby();
        using var replication = Protected(primary, $"127.0.0.1:{port}");
        primary.RequestStop(VmStop.Error("the guest powered off"));
        await run;
        var ended = await outcome;
        Assert.Null(ended.Checkpoint);
        Assert.Contains("the VM stopped", ended.Reason);
    }

    [Fact]
    public async Task Handover_CommitsAFinalEpochEqualToThePausedPrimary_AndStopsThePrimaryAsHandedOver()
    {
        string disk = Path.Combine(_directory, "disk.img");
        File.WriteAllBytes(disk, Enumerable.Range(0, 1 << 20).Select(i => (byte)(i * 7 + 3)).ToArray());
        using var primary = StartCountingGuest(disk);
        var run = Task.Factory.StartNew(primary.Run, TaskCreationOptions.LongRunning);
        var (port, outcome) = StartStandby();
        string api = Path.Combine(_directory, "api.sock");
        using var control = ControlServer.Start(primary, api, _log);
        ControlSocketClient.Ask(api, new { command = "replicate", to = $"127.0.0.1:{port}", intervalMs = 20 });
        WaitFor(() => ControlSocketClient.Ask(api, "status").GetProperty("replication").GetProperty("epoch").GetInt64() >= 3, "three epochs");

        var answer = ControlSocketClient.Ask(api, new { command = "replicate", handover = true });
        var stop = await run;
        var ended = await outcome;

        Assert.Equal("handed-over", answer.GetProperty("state").GetString());
        long epoch = answer.GetProperty("epoch").GetInt64();
        Assert.Equal(VmStopKind.HandedOver, stop.Kind);
        Assert.Equal(ExitCodes.GuestFinished, stop.ExitCode);
        Assert.True(primary.IsPaused);
        Assert.True(ended.HandedOver, ended.Reason);
        using var checkpoint = ended.Checkpoint!;
        Assert.Equal(epoch, checkpoint.Epoch);
        // The final epoch is the paused primary, whole: every page of RAM and every disk byte.
        using var standby = checkpoint.Resume(new MachineConfig { SerialOutput = Stream.Null, Name = checkpoint.Name }, _log);
        Assert.NotEqual(0UL, primary.Memory.Read<ulong>(FirmwareGuests.CounterAddress));
        foreach (var region in primary.Memory.Regions)
        {
            for (ulong offset = 0; offset < region.SizeBytes; offset += 1 << 20)
            {
                int length = (int)Math.Min(1 << 20, region.SizeBytes - offset);
                Assert.True(primary.Memory.GetSpan(region.GuestAddress + offset, length).SequenceEqual(standby.Memory.GetSpan(region.GuestAddress + offset, length)),
                    $"RAM at 0x{region.GuestAddress + offset:x} differs");
            }
        }
        Assert.Equal(File.ReadAllBytes(disk), File.ReadAllBytes(checkpoint.Description.Disks[0].Path));
        Assert.Equal(0, primary.Output.HeldBytes);
    }

    [Fact]
    public async Task Handover_WhenTheVmIsNotProtected_IsRefused_AndTheVmRunsOn()
    {
        using var primary = StartCountingGuest();
        var run = Task.Factory.StartNew(primary.Run, TaskCreationOptions.LongRunning);
        var (port, outcome) = StartStandby();
        string api = Path.Combine(_directory, "api.sock");
        using var control = ControlServer.Start(primary, api, _log);
        var notReplicated = Assert.Throws<InvalidOperationException>(() => ControlSocketClient.Ask(api, new { command = "replicate", handover = true }));
        Assert.Contains("not being replicated", notReplicated.Message);

        using var replication = Protected(primary, $"127.0.0.1:{port}");
        replication.Stop();
        await outcome;
        var failure = Assert.Throws<ReplicationException>(() => replication.HandOver());

        Assert.Contains("not protected", failure.Message);
        Assert.Equal("unprotected", replication.Status.State);
        Assert.False(primary.IsPaused);
        Assert.Null(primary.StopReason);
        ulong counter = primary.Memory.Read<ulong>(FirmwareGuests.CounterAddress);
        WaitFor(() => primary.Memory.Read<ulong>(FirmwareGuests.CounterAddress) > counter, "the guest to count on");
        primary.RequestStop(VmStop.Error("test over"));
        await run;
    }

    [Fact]
    public async Task Handover_WithTheStandbyCutOff_FailsAndTheVmIsResumedHere()
    {
        using var primary = StartCountingGuest();
        var run = Task.Factory.StartNew(primary.Run, TaskCreationOptions.LongRunning);
        var (port, outcome) = StartStandby();
        using var link = new LinkCutProxy(port);
        using var replication = Protected(primary, link.Address);
        link.Silence();

        var failure = Assert.Throws<ReplicationException>(() => replication.HandOver());
        (await outcome).Checkpoint?.Dispose();

        Assert.Contains("the VM runs on here", failure.Message);
        Assert.Equal("unprotected", replication.Status.State);
        Assert.False(primary.IsPaused);
        Assert.Null(primary.StopReason);
        ulong counter = primary.Memory.Read<ulong>(FirmwareGuests.CounterAddress);
        WaitFor(() => primary.Memory.Read<ulong>(FirmwareGuests.CounterAddress) > counter, "the guest to count on after the failed handover");
        primary.RequestStop(VmStop.Error("test over"));
        await run;
    }
}
