using Vmm.Arch;
using Vmm.Memory;
using Xunit;

namespace Vmm.Tests.Arch;

public sealed class IdentityPageTablesTests
{
    private const ulong PresentWritable = 0x3, LargePage = 0x80;

    private static GuestMemory WrittenTables()
    {
        var memory = GuestMemory.Allocate([(0, 1UL << 20)]);
        IdentityPageTables.Write(memory);
        return memory;
    }

    [Fact]
    public void IdentityPageTables_Pml4PointsAtPdpt()
    {
        using var memory = WrittenTables();
        Assert.Equal(X86Layout.PdptAddress | PresentWritable, memory.Read<ulong>(X86Layout.Pml4Address));
        Assert.Equal(0UL, memory.Read<ulong>(X86Layout.Pml4Address + 8));
        Assert.Equal(0UL, memory.Read<ulong>(X86Layout.Pml4Address + 511 * 8));
    }

    [Fact]
    public void IdentityPageTables_PdptHasFourDirectories()
    {
        using var memory = WrittenTables();
        for (ulong gib = 0; gib < 4; gib++)
            Assert.Equal((X86Layout.PageDirectoriesAddress + gib * 4096) | PresentWritable, memory.Read<ulong>(X86Layout.PdptAddress + gib * 8));
        Assert.Equal(0UL, memory.Read<ulong>(X86Layout.PdptAddress + 4 * 8));
    }

    [Theory]
    [InlineData(0x0000_0000UL)]
    [InlineData(0x0020_0000UL)]
    [InlineData(0x0100_0000UL)]
    [InlineData(0x3fe0_0000UL)]
    [InlineData(0x4000_0000UL)]
    [InlineData(0xc000_0000UL)]
    [InlineData(0xfee0_0000UL)]
    [InlineData(0xffe0_0000UL)]
    public void IdentityPageTables_MapsTwoMiBPagesOneToOne(ulong address)
    {
        using var memory = WrittenTables();
        // Walk as the MMU does: PML4[47:39] -> PDPT[38:30] -> PD[29:21] -> 2 MiB page.
        ulong pml4e = memory.Read<ulong>(X86Layout.Pml4Address + ((address >> 39) & 511) * 8);
        ulong pdpte = memory.Read<ulong>((pml4e & ~0xfffUL) + ((address >> 30) & 511) * 8);
        ulong pde = memory.Read<ulong>((pdpte & ~0xfffUL) + ((address >> 21) & 511) * 8);
        Assert.Equal(PresentWritable | LargePage, pde & 0xfff);
        Assert.Equal(address, pde & ~0x1f_ffffUL);
    }

    [Fact]
    public void IdentityPageTables_EveryDirectoryEntryIsTheNextTwoMiB()
    {
        using var memory = WrittenTables();
        for (ulong i = 0; i < 4 * 512; i++)
            Assert.Equal((i << 21) | PresentWritable | LargePage, memory.Read<ulong>(X86Layout.PageDirectoriesAddress + i * 8));
    }
}
