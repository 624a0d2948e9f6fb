using Vmm.Arch;
using Xunit;

namespace Vmm.Tests.Arch;

public sealed class X86LayoutTests
{
    [Fact]
    public void X86Layout_SmallGuestIsOneRangeFromZero()
    {
        var ranges = X86Layout.RamRanges(64UL << 20);
        Assert.Equal([(0UL, 64UL << 20)], ranges);
    }

    [Fact]
    public void X86Layout_GuestExactlyTheHoleSizeIsOneRange()
    {
        var ranges = X86Layout.RamRanges(X86Layout.MmioHoleAddress);
        Assert.Equal([(0UL, 0xc000_0000UL)], ranges);
    }

    [Fact]
    public void X86Layout_LargeGuestContinuesAtFourGiB()
    {
        var ranges = X86Layout.RamRanges(8UL << 30);
        Assert.Equal([(0UL, 0xc000_0000UL), (0x1_0000_0000UL, (8UL << 30) - 0xc000_0000UL)], ranges);
    }

    [Fact]
    public void X86Layout_OneByteOverTheHoleSpillsOneByteAboveFourGiB()
    {
        var ranges = X86Layout.RamRanges(X86Layout.MmioHoleAddress + 1);
        Assert.Equal([(0UL, 0xc000_0000UL), (0x1_0000_0000UL, 1UL)], ranges);
    }

    [Fact]
    public void X86Layout_BootStructuresDoNotOverlap()
    {
        // GDT (5 entries), IDT, zero page, stack, PML4, PDPT, 4 page directories, command line: in order, disjoint, below the EBDA.
        Assert.True(X86Layout.GdtAddress + 5 * 8 <= X86Layout.IdtAddress);
        Assert.True(X86Layout.IdtAddress + 8 <= X86Layout.ZeroPageAddress);
        Assert.True(X86Layout.ZeroPageAddress + 4096 <= X86Layout.BootStackPointer);
        Assert.True(X86Layout.BootStackPointer < X86Layout.Pml4Address);
        Assert.Equal(X86Layout.Pml4Address + 0x1000, X86Layout.PdptAddress);
        Assert.Equal(X86Layout.PdptAddress + 0x1000, X86Layout.PageDirectoriesAddress);
        Assert.True(X86Layout.PageDirectoriesAddress + (ulong)X86Layout.IdentityMappedGiB * 4096 <= X86Layout.CommandLineAddress);
        Assert.True(X86Layout.CommandLineAddress + X86Layout.CommandLineMaxBytes <= X86Layout.EbdaAddress);
        Assert.True(X86Layout.TssAddress >= X86Layout.MmioHoleAddress && X86Layout.TssAddress + 3 * 4096 <= X86Layout.FourGiB);
        Assert.True(X86Layout.IdentityMapAddress >= X86Layout.MmioHoleAddress);
    }
}
