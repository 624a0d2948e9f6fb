using System.Text;
using System.Text.Json;
using Vmm.Serialization;
using Vmm.Control;
using Vmm.Diagnostics;
using Vmm.Arch;
using Vmm.Firmware;
using Vmm.Kvm;
using Vmm.Tests.Integration;
using Vmm.Snapshot;
using Vmm.State;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Snapshot;

/// <summary>A running guest is snapshotted through the control socket and continued from the snapshot in
/// a new machine, as <c>vmm run --restore</c> does.</summary>
public sealed class SnapshotRoundTripTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-snap-").FullName;
    private readonly Logger _log = new(TextWriter.Null, LogLevel.Debug);

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static ulong WaitForCounterToMove(Machine machine, ulong from)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        ulong value;
        while ((value = machine.Memory.Read<ulong>(FirmwareGuests.CounterAddress)) <= from && DateTime.UtcNow < deadline) Thread.Sleep(10);
        return value;
    }

    [Fact]
    public async Task Snapshot_ThenRestore_ContinuesTheGuestWhereItStopped()
    {
        string kernel = Path.Combine(_directory, "count.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.CountForever());
        string snapshot = Path.Combine(_directory, "snap");
        ulong atSnapshot;
        byte[] lowMemoryAtSnapshot = new byte[1 << 20];
        using (var source = MachineBuilder.Boot(new MachineConfig { KernelPath = kernel, MemoryBytes = 64UL << 20, SerialOutput = Stream.Null, VcpuCount = 2 }, _log))
        {
            var run = Task.Run(source.Run);
            using var control = ControlServer.Start(source, Path.Combine(_directory, "api.sock"), _log);
            WaitForCounterToMove(source, 0);
            Assert.True(Send(control, """{"command":"pause"}""").GetProperty("ok").GetBoolean());
            var answer = Send(control, $$"""{"command":"snapshot","path":"{{snapshot}}"}""");
            Assert.True(answer.GetProperty("ok").GetBoolean(), answer.ToString());
            Assert.Equal("paused", answer.GetProperty("state").GetString());
            atSnapshot = source.Memory.Read<ulong>(FirmwareGuests.CounterAddress);
            source.Memory.Read(0, lowMemoryAtSnapshot);
            source.RequestStop(VmStop.Error("test: source done"));
            await run;
        }

        var (state, memoryPath) = SnapshotDirectory.Read(snapshot);
        Assert.Equal(2, state.Vcpus.Count);
        using var restored = MachineBuilder.ForRestore(state.Description.ToConfig(new MachineConfig { SerialOutput = Stream.Null }), _log, memoryPath);
        MachinePersistence.Restore(restored, state);
        // Each vCPU shows the guest the CPUID it was shown before (its own x2APIC ID in leaf 0xb included).
        Assert.Equal(state.Description.VcpuCpuid!.Select(Leaves), restored.VcpuCpuid.Select(Leaves));
        Assert.Equal(atSnapshot, restored.Memory.Read<ulong>(FirmwareGuests.CounterAddress));
        byte[] lowMemoryRestored = new byte[1 << 20];
        restored.Memory.Read(0, lowMemoryRestored);
        Assert.Equal(lowMemoryAtSnapshot, lowMemoryRestored);

        var restoredRun = Task.Run(restored.Run);
        ulong later = WaitForCounterToMove(restored, atSnapshot);
        restored.RequestStop(VmStop.Error("test over"));
        var stop = await restoredRun;
        Assert.True(later > atSnapshot, $"the restored guest did not count on from {atSnapshot} (stopped: {stop.Description})");
        Assert.Equal(VmStopKind.VmmError, stop.Kind);
    }

    private static string Leaves(Vmm.Kvm.Interop.KvmCpuidEntry2[] table) =>
        string.Join(" ", table.Where(e => e.Function is 0xb or 0x8000_0001).Select(e => $"{e.Function:x}.{e.Index}:{e.Ecx:x}:{e.Edx:x}"));

    /// <summary>Snapshots a guest that has counted for a while, as <c>vmm ctl snapshot</c> does.</summary>
    private (MachineState State, string MemoryPath, ulong Counter) SnapshotACountingGuest(Action<Vmm.Kvm.Interop.KvmCpuidEntry2[]>? adjustCpuid = null)
    {
        string kernel = Path.Combine(_directory, "count.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.CountForever());
        using var source = MachineBuilder.Boot(new MachineConfig
        {
            KernelPath = kernel, MemoryBytes = 64UL << 20, SerialOutput = Stream.Null, AdjustCpuidForTests = adjustCpuid,
        }, _log);
        var run = Task.Run(source.Run);
        WaitForCounterToMove(source, 0);
        source.Pause();
        string snapshot = Path.Combine(_directory, "snap");
        SnapshotDirectory.Write(source, snapshot);
        ulong counter = source.Memory.Read<ulong>(FirmwareGuests.CounterAddress);
        source.RequestStop(VmStop.Error("test: source done"));
        run.Wait();
        var (state, memoryPath) = SnapshotDirectory.Read(snapshot);
        return (state, memoryPath, counter);
    }

    [Fact]
    public void Restore_OfAGuestShownAFeatureThisHostLacks_IsRefusedNamingIt()
    {
        var (state, memoryPath, _) = SnapshotACountingGuest(FeatureThisHostLacks.ShowIn);
        Assert.True(CpuidCompatibility.MissingFeatures(state.Description.VcpuCpuid![0], FeatureThisHostLacks.Offered()).Contains(FeatureThisHostLacks.Feature),
            "the saved CPUID does not show the feature");

        var failure = Assert.Throws<ConfigurationException>(() =>
            MachineBuilder.ForRestore(state.Description.ToConfig(new MachineConfig { SerialOutput = Stream.Null }), _log, memoryPath));

        Assert.Equal($"this host's KVM cannot give the guest the CPU it was shown: {FeatureThisHostLacks.Feature}", failure.Message);
    }

    [Fact]
    public async Task Restore_OfAStateSavedWithoutCpuid_GivesTheGuestThisHostsAndContinues()
    {
        // What a state of format version 2 reads as: the same machine, no CPUID.
        var (saved, memoryPath, counter) = SnapshotACountingGuest();
        var state = new MachineState { Description = saved.Description with { VcpuCpuid = null }, Vcpus = saved.Vcpus, Platform = saved.Platform, Devices = saved.Devices };
        using var restored = MachineBuilder.ForRestore(state.Description.ToConfig(new MachineConfig { SerialOutput = Stream.Null }), _log, memoryPath);
        MachinePersistence.Restore(restored, state);

        var run = Task.Run(restored.Run);
        ulong later = WaitForCounterToMove(restored, counter);
        restored.RequestStop(VmStop.Error("test over"));
        await run;
        Assert.True(later > counter, $"the restored guest did not count on from {counter}");
    }

    [Fact]
    public void Restore_RefusesAStateForADifferentMachine()
    {
        string kernel = Path.Combine(_directory, "spin.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.SpinForever());
        using var source = MachineBuilder.Boot(new MachineConfig { KernelPath = kernel, MemoryBytes = 64UL << 20, SerialOutput = Stream.Null }, _log);
        source.Pause();
        var state = MachinePersistence.Save(source);
        using var other = MachineBuilder.ForRestore(new MachineConfig { MemoryBytes = 128UL << 20, SerialOutput = Stream.Null }, _log);
        Assert.Throws<StateFormatException>(() => MachinePersistence.Restore(other, state));
    }

    [Theory]
    [InlineData("missing")]
    [InlineData("extra")]
    [InlineData("damaged")]
    public void Restore_RefusesDeviceStatesThatDoNotFitTheMachine(string change)
    {
        string kernel = Path.Combine(_directory, "spin.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.SpinForever());
        using var source = MachineBuilder.Boot(new MachineConfig { KernelPath = kernel, MemoryBytes = 64UL << 20, SerialOutput = Stream.Null }, _log);
        source.Pause();
        var saved = MachinePersistence.Save(source);
        var devices = change switch
        {
            "missing" => saved.Devices.Where(d => d.Name != "cmos").ToArray(),
            "extra" => [.. saved.Devices, new DeviceStateSection("virtio-mmio 0xd0000000", [])],
            _ => saved.Devices.Select(d => d.Name == "i8042" ? d with { State = [.. d.State, 0] } : d).ToArray(),
        };
        var state = new MachineState { Description = saved.Description, Vcpus = saved.Vcpus, Platform = saved.Platform, Devices = devices };
        using var target = MachineBuilder.ForRestore(new MachineConfig { MemoryBytes = 64UL << 20, SerialOutput = Stream.Null }, _log);

        var failure = Assert.Throws<StateFormatException>(() => MachinePersistence.Restore(target, state));
        Assert.Contains(change switch
        {
            "missing" => "nothing for device \"cmos\"",
            "extra" => "devices this machine lacks: \"virtio-mmio 0xd0000000\"",
            _ => "state of device \"i8042\": 1 unexpected bytes",
        }, failure.Message);
    }

    [Fact]
    public void SaveState_OfARunningVm_IsRefused()
    {
        string kernel = Path.Combine(_directory, "spin.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.SpinForever());
        using var machine = MachineBuilder.Boot(new MachineConfig { KernelPath = kernel, MemoryBytes = 64UL << 20, SerialOutput = Stream.Null }, _log);
        Assert.Throws<VmOperationException>(() => MachinePersistence.Save(machine));
    }

    private static JsonElement Send(ControlServer control, string request) =>
        JsonDocument.Parse(control.Handle(Encoding.UTF8.GetBytes(request))).RootElement.Clone();
}
