using CsCheck;
using Vmm.Serialization;
using Vmm.Diagnostics;
using Vmm.Firmware;
using Vmm.State;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.State;

/// <summary>The versioned state format: what is written reads back the same, and damaged bytes are refused
/// with a <see cref="StateFormatException"/> rather than read as something else.</summary>
public sealed class MachineStateFormatTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-state-").FullName;
    private readonly byte[] _saved;

    public MachineStateFormatTests()
    {
        string kernel = Path.Combine(_directory, "spin.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.SpinForever());
        using var machine = MachineBuilder.Boot(new MachineConfig { KernelPath = kernel, MemoryBytes = 64UL << 20, SerialOutput = Stream.Null, VcpuCount = 2 },
            new Logger(TextWriter.Null, LogLevel.Info));
        machine.Pause();
        _saved = MachinePersistence.Save(machine).ToBytes();
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void SavedState_ReadsBackToTheSameBytes()
    {
        var state = MachineState.FromBytes(_saved);
        Assert.Equal(2, state.Vcpus.Count);
        Assert.NotEmpty(state.Vcpus[0].Msrs);
        Assert.Equal(_saved, state.ToBytes());
    }

    [Fact]
    public void SavedState_HoldsTheBootRegisters()
    {
        var state = MachineState.FromBytes(_saved);
        // The boot vCPU is about to enter the firmware guest at its load address; the other waits for SIPI.
        Assert.Equal(FirmwareImage.LoadAddress, state.Vcpus[0].Regs.Rip);
        Assert.NotEqual(state.Vcpus[0].MpState.State, state.Vcpus[1].MpState.State);
    }

    [Fact]
    public void OtherFormatVersion_IsRefused()
    {
        byte[] bytes = (byte[])_saved.Clone();
        bytes[8] = 4;
        Assert.Contains("format version 4", Assert.Throws<StateFormatException>(() => MachineState.FromBytes(bytes)).Message);
    }

    [Fact]
    public void SavedState_HoldsTheCpuidEachVcpuShowsItsGuest()
    {
        var cpuid = MachineState.FromBytes(_saved).Description.VcpuCpuid;
        Assert.NotNull(cpuid);
        Assert.Equal(2, cpuid.Count);
        // Each vCPU's own x2APIC ID (leaf 0xb EDX), as vmm gave it.
        Assert.Equal([0u, 1u], cpuid.Select(table => table.First(e => e.Function == 0xb).Edx));
    }

    [Fact]
    public void EveryTruncation_IsRefused()
    {
        Gen.Int[0, _saved.Length - 1].Sample(length =>
            Assert.Throws<StateFormatException>(() => MachineState.FromBytes(_saved.AsMemory(0, length))), iter: 200);
    }

    [Fact]
    public void TrailingBytes_AreRefused() =>
        Assert.Throws<StateFormatException>(() => MachineState.FromBytes((byte[])[.. _saved, 0]));

    [Fact]
    public void CorruptedBytes_AreRefusedOrReadWithoutCrashing()
    {
        // A flipped byte inside a register blob cannot be detected by the format (the migration stream's
        // checksum does that); what matters is that nothing but StateFormatException ever comes out.
        Gen.Select(Gen.Int[0, _saved.Length - 1], Gen.Byte).Sample((position, value) =>
        {
            byte[] bytes = (byte[])_saved.Clone();
            bytes[position] = value;
            try { MachineState.FromBytes(bytes); }
            catch (StateFormatException) { }
        }, iter: 500);
    }
}
