using Vmm.Arch;
using Vmm.Boot;
using Vmm.Memory;
using Xunit;

namespace Vmm.Tests.Arch;

/// <summary>The guest-memory half of BootCpuState (the vCPU half needs /dev/kvm).</summary>
public sealed class BootCpuStateTests
{
    [Theory]
    [InlineData(KernelEntryMode.Long64)]
    [InlineData(KernelEntryMode.Protected32)]
    public void BootCpuState_WritesEveryGdtEntryIntact(KernelEntryMode mode)
    {
        using var memory = GuestMemory.Allocate([(0, 1UL << 20)]);
        BootCpuState.WriteTables(memory, mode);
        var expected = GdtEntry.BootTable(mode == KernelEntryMode.Long64);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(expected[i].Encode() == memory.Read<ulong>(X86Layout.GdtAddress + (ulong)i * 8),
                $"GDT entry {i} (selector 0x{i * 8:x}) is 0x{memory.Read<ulong>(X86Layout.GdtAddress + (ulong)i * 8):x16}, expected 0x{expected[i].Encode():x16}");
    }

    [Fact]
    public void BootCpuState_WritesEmptyIdt()
    {
        using var memory = GuestMemory.Allocate([(0, 1UL << 20)]);
        memory.Fill(X86Layout.IdtAddress, 8, 0xff);
        BootCpuState.WriteTables(memory, KernelEntryMode.Long64);
        Assert.Equal(0UL, memory.Read<ulong>(X86Layout.IdtAddress));
    }

    [Fact]
    public void BootCpuState_WritesPageTablesOnlyForLongMode()
    {
        using var memory = GuestMemory.Allocate([(0, 1UL << 20)]);
        BootCpuState.WriteTables(memory, KernelEntryMode.Protected32);
        Assert.Equal(0UL, memory.Read<ulong>(X86Layout.Pml4Address));
        BootCpuState.WriteTables(memory, KernelEntryMode.Long64);
        Assert.Equal(X86Layout.PdptAddress | 3, memory.Read<ulong>(X86Layout.Pml4Address));
    }
}
