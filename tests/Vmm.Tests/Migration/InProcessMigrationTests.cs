using System.Text.RegularExpressions;
using Vmm.Devices.Virtio;
using Vmm.Diagnostics;
using Vmm.Firmware;
using Vmm.Kvm.Interop;
using Vmm.Tests.Integration;
using Vmm.Migration;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Migration;

/// <summary>Source and target machines in one process, over loopback TCP: the quick check of the whole
/// precopy path (the two-process tests run the real daemon).</summary>
public sealed class InProcessMigrationTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-mig-").FullName;
    private readonly StringWriter _logText = new();
    private readonly Logger _log;

    public InProcessMigrationTests() => _log = new Logger(TextWriter.Synchronized(_logText), LogLevel.Debug);

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private Machine StartCountingGuest(int vcpus = 1, Action<KvmCpuidEntry2[]>? adjustCpuid = null, IReadOnlyList<BlockDiskConfig>? disks = null)
    {
        string kernel = Path.Combine(_directory, "count.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.CountForever());
        return MachineBuilder.Boot(new MachineConfig
        {
            KernelPath = kernel, MemoryBytes = 64UL << 20, SerialOutput = Stream.Null, VcpuCount = vcpus, AdjustCpuidForTests = adjustCpuid, Disks = disks ?? [],
        }, _log);
    }

    /// <summary>Where the tests put random content in the guest's RAM, away from the counting guest's code and counter.</summary>
    private const ulong RandomRamAddress = 16UL << 20;
    private const int RandomRamBytes = 32 << 20;

    private static void FillWithRandomContent(Machine machine) => new Random(9).NextBytes(machine.Memory.GetSpan(RandomRamAddress, RandomRamBytes));

    /// <summary>The guest's RAM but the page it counts in (the target's guest counts on after the hand-over).</summary>
    private static byte[] RamButTheCounter(Machine machine)
    {
        byte[] ram = machine.Memory.GetSpan(0, (int)machine.Config.MemoryBytes).ToArray();
        Array.Clear(ram, (int)FirmwareGuests.CounterAddress & ~4095, 4096);
        return ram;
    }

    /// <summary>Hides the lowest feature of leaf 0x80000001 ECX (kvm_pvm keeps that leaf as set): the guest is shown
    /// less than this host offers, so a target that gave it this host's CPUID instead of its own would show.</summary>
    private static void HideAFeature(KvmCpuidEntry2[] table)
    {
        foreach (ref var e in table.AsSpan())
            if (e.Function == 0x8000_0001) e.Ecx &= e.Ecx - 1;
    }

    private static uint[] ExtendedFeatures(Machine machine) =>
        machine.VcpuCpuid.Select(table => table.First(e => e.Function == 0x8000_0001).Ecx).ToArray();

    private static ulong Counter(Machine machine) => machine.Memory.Read<ulong>(FirmwareGuests.CounterAddress);

    private static ulong WaitForCounterAbove(Machine machine, ulong value)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (Counter(machine) <= value && DateTime.UtcNow < deadline) Thread.Sleep(10);
        return Counter(machine);
    }

    [Fact]
    public async Task Migrate_MovesARunningGuest_ThatCountsOnOnTheTarget()
    {
        using var source = StartCountingGuest(vcpus: 2, adjustCpuid: HideAFeature);
        var sourceRun = Task.Factory.StartNew(source.Run, TaskCreationOptions.LongRunning);
        WaitForCounterAbove(source, 0);
        using var target = new LoopbackMigration(_log);
        var passes = new List<MigrationPass>();

        var report = MigrationSource.Migrate(source, new MigrationOptions { Target = target.Address }, passes.Add, _log);
        ulong atHandOver = Counter(source);
        source.RequestStop(VmStop.Migrated(target.Address));
        await sourceRun;

        var (machine, run) = await target.Target;
        uint[] shownOnTarget;
        using (machine)
        {
            Assert.True(WaitForCounterAbove(machine, atHandOver) > atHandOver, "the guest did not go on counting on the target");
            shownOnTarget = ExtendedFeatures(machine);
            machine.RequestStop(VmStop.Error("test over"));
            await run;
        }
        // The CPUID travelled: the target's vCPUs show the guest what the source's did, not what this host offers.
        Assert.Equal(ExtendedFeatures(source), shownOnTarget);
        Assert.NotEmpty(passes);
        // The guest touched a few pages of its 64 MiB: a page never touched is zero on the target too, and is not sent.
        Assert.InRange(passes[0].PagesSent, 1, 1024);
        Assert.True(report.DowntimeMs > 0);
        Assert.True(report.Passes >= 2);
    }

    [Fact]
    public async Task Migrate_OverFourConnections_CopiesRamByteForByte_AndLeavesNoConnectionBehind()
    {
        using var source = StartCountingGuest(vcpus: 2);
        FillWithRandomContent(source);
        var sourceRun = Task.Factory.StartNew(source.Run, TaskCreationOptions.LongRunning);
        WaitForCounterAbove(source, 0);
        using var target = new LoopbackMigration(_log);

        var report = MigrationSource.Migrate(source, new MigrationOptions { Target = target.Address, Connections = 4 }, _ => { }, _log);
        ulong atHandOver = Counter(source);
        source.RequestStop(VmStop.Migrated(target.Address));
        await sourceRun;

        var (machine, run) = await target.Target;
        using (machine)
        {
            Assert.True(WaitForCounterAbove(machine, atHandOver) > atHandOver, "the guest did not go on counting on the target");
            Assert.Equal(RamButTheCounter(source), RamButTheCounter(machine));
            machine.RequestStop(VmStop.Error("test over"));
            await run;
        }
        Assert.True(report.TotalBytes > RandomRamBytes);
        await target.AllConnectionsEnded().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(4, Regex.Count(_logText.ToString(), "pass 1 received on connection"));
        Assert.Equal(0, target.Joins.Count);
    }

    [Fact]
    public async Task Migrate_OverFourConnectionsCopyingTheDisk_LeavesAnIdenticalImageOnTheTarget()
    {
        string image = Path.Combine(_directory, "disk.img");
        DiskImageFiles.CreateSparse(image, 16L << 20, (1L << 20, Devices.Virtio.VirtioBlockHarness.Pattern(3 << 20, seed: 1)), (9L << 20, Devices.Virtio.VirtioBlockHarness.Pattern(5 << 20, seed: 2)));
        string copies = Directory.CreateDirectory(Path.Combine(_directory, "copies")).FullName;
        using var source = StartCountingGuest(disks: [new BlockDiskConfig(image, false, null)]);
        FillWithRandomContent(source);
        var sourceRun = Task.Factory.StartNew(source.Run, TaskCreationOptions.LongRunning);
        WaitForCounterAbove(source, 0);
        using var target = new LoopbackMigration(_log, copies);

        var report = MigrationSource.Migrate(source, new MigrationOptions { Target = target.Address, Connections = 4, CopyDisks = true }, _ => { }, _log);
        source.RequestStop(VmStop.Migrated(target.Address));
        await sourceRun;

        var (machine, run) = await target.Target;
        using (machine)
        {
            Assert.Equal(RamButTheCounter(source), RamButTheCounter(machine));
            machine.RequestStop(VmStop.Error("test over"));
            await run;
        }
        Assert.Equal(8L << 20, report.DiskBytes);
        Assert.Equal(File.ReadAllBytes(image), File.ReadAllBytes(Path.Combine(copies, "disk.img")));
    }

    [Fact]
    public async Task Migrate_WhenAFurtherConnectionIsCutMidPass_FailsOnBothSidesAndTheGuestRunsOnHere()
    {
        using var source = StartCountingGuest();
        FillWithRandomContent(source);
        var sourceRun = Task.Factory.StartNew(source.Run, TaskCreationOptions.LongRunning);
        WaitForCounterAbove(source, 0);
        using var target = new LoopbackMigration(_log);
        // Connection 2 of 4 (the third accepted) is cut after 1 MiB of its share of the first pass.
        using var proxy = new EndToEnd.TcpFaultProxy(int.Parse(target.Address.Split(':')[1]), afterBytes: 1 << 20, EndToEnd.TcpFaultProxy.Fault.Truncate, faultyConnection: 2);

        var failure = Assert.Throws<MigrationException>(() => MigrationSource.Migrate(source,
            new MigrationOptions { Target = $"127.0.0.1:{proxy.Port}", Connections = 4 }, _ => { }, _log));

        Assert.Contains("keeps running here", failure.Message);
        await Assert.ThrowsAnyAsync<MigrationException>(() => target.Target.WaitAsync(TimeSpan.FromSeconds(30)));
        // Every connection's thread on the target ended, and the migration left nothing to join.
        await target.AllConnectionsEnded().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, target.Joins.Count);
        Assert.False(source.IsPaused);
        ulong now = Counter(source);
        Assert.True(WaitForCounterAbove(source, now) > now, "the guest must keep running on the source");
        source.RequestStop(VmStop.Error("test over"));
        await sourceRun;
    }

    [Fact]
    public async Task Migrate_ToAHostWhoseKvmLacksAFeatureTheGuestWasShown_IsRefusedBeforeThePause()
    {
        using var source = StartCountingGuest(adjustCpuid: FeatureThisHostLacks.ShowIn);
        var sourceRun = Task.Factory.StartNew(source.Run, TaskCreationOptions.LongRunning);
        WaitForCounterAbove(source, 0);
        using var target = new LoopbackMigration(_log);
        var passes = new List<MigrationPass>();

        var failure = Assert.Throws<MigrationException>(() =>
            MigrationSource.Migrate(source, new MigrationOptions { Target = target.Address }, passes.Add, _log));

        string refusal = $"this host's KVM cannot give the guest the CPU it was shown: {FeatureThisHostLacks.Feature}";
        Assert.Equal($"migration to {target.Address} failed: the target did not accept the VM: {refusal}; the VM keeps running here", failure.Message);
        // The target refused the Hello, so it never had a machine; the source never began a pass, so it never paused.
        Assert.Equal(refusal, (await Assert.ThrowsAsync<MigrationException>(() => target.Target)).Message);
        Assert.Empty(passes);
        Assert.DoesNotContain("dirty pages tracked", _logText.ToString());
        Assert.False(source.IsPaused);
        ulong now = Counter(source);
        Assert.True(WaitForCounterAbove(source, now) > now, "the guest must keep running on the source");
        source.RequestStop(VmStop.Error("test over"));
        await sourceRun;
    }

    [Fact]
    public async Task Migrate_ToATargetThatDropsTheConnection_LeavesTheGuestRunningHere()
    {
        using var source = StartCountingGuest();
        var sourceRun = Task.Factory.StartNew(source.Run, TaskCreationOptions.LongRunning);
        WaitForCounterAbove(source, 0);
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var dropper = Task.Run(() =>
        {
            using var socket = listener.AcceptSocket();
            var buffer = new byte[64 << 10];
            socket.Receive(buffer); // the Hello, then hang up without answering
        });

        var failure = Assert.Throws<MigrationException>(() => MigrationSource.Migrate(source,
            new MigrationOptions { Target = $"127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}" }, _ => { }, _log));
        await dropper;

        Assert.Contains("keeps running here", failure.Message);
        Assert.False(source.IsPaused);
        ulong now = Counter(source);
        Assert.True(WaitForCounterAbove(source, now) > now, "the guest must keep running on the source");
        source.RequestStop(VmStop.Error("test over"));
        await sourceRun;
    }

    [Fact]
    public async Task Migrate_WhenTheVmStopsMidWay_EndsAtOnceSayingSo()
    {
        using var source = StartCountingGuest();
        var sourceRun = Task.Factory.StartNew(source.Run, TaskCreationOptions.LongRunning);
        WaitForCounterAbove(source, 0);
        using var hung = new EndToEnd.StallingMigrationTarget(stallAfterPass: 1);
        var migration = Task.Run(() => MigrationSource.Migrate(source, new MigrationOptions { Target = hung.Address }, _ => { }, _log));
        Assert.True(hung.WaitUntilStalled(TimeSpan.FromSeconds(60)), "the first pass never arrived");

        // The guest powers off while the source waits on a target that will never answer.
        source.RequestStop(VmStop.PowerOff("test"));
        var failure = await Assert.ThrowsAsync<MigrationException>(() => migration.WaitAsync(TimeSpan.FromSeconds(60)));
        await sourceRun;

        Assert.Contains("the VM stopped during the migration (guest powered off (test))", failure.Message);
        Assert.DoesNotContain("keeps running here", failure.Message);
    }

    [Fact]
    public void Migrate_ToNobody_FailsWithAClearError()
    {
        using var source = StartCountingGuest();
        var failure = Assert.Throws<MigrationException>(() => MigrationSource.Migrate(source,
            new MigrationOptions { Target = "127.0.0.1:1", IoTimeout = TimeSpan.FromSeconds(5) }, _ => { }, _log));
        Assert.Contains("cannot connect", failure.Message);
    }
}
