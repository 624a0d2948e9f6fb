using Vmm.Boot;
using Xunit;

namespace Vmm.Tests.Boot;

public sealed class ElfKernelImageTests
{
    private const string Path = "/images/vmlinux";
    private static readonly byte[] Code = BzImageBuilder.PatternBytes(0x300, seed: 5);

    private static ElfKernelImage Parse(byte[] file) =>
        ElfKernelImage.Parse(file.AsSpan(0, Math.Min(file.Length, 4096)), file.Length, (offset, count) => file.AsSpan((int)offset, count).ToArray(), Path);

    private static BootException Rejects(ElfBuilder builder)
    {
        var e = Assert.Throws<BootException>(() => Parse(builder.Build()));
        Assert.StartsWith(Path + ":", e.Message);
        return e;
    }

    [Fact]
    public void ElfKernelImage_ParsesSegmentAndPhysicalEntry()
    {
        var builder = ElfBuilder.WithSegment(Code, physical: 0x100_0000, memorySize: 0x2000);
        builder.Entry = 0x100_0040;
        var image = Parse(builder.Build());
        var segment = Assert.Single(image.Segments);
        Assert.Equal(new ElfKernelImage.Segment(0x1000, (ulong)Code.Length, 0x100_0000, 0x2000), segment);
        Assert.Equal(0x100_0040UL, image.EntryPhysicalAddress);
        Assert.Equal(0x100_0000UL, image.LowestAddress);
        Assert.Equal(0x100_2000UL, image.EndAddress);
    }

    [Fact]
    public void ElfKernelImage_TranslatesVirtualEntryThroughItsSegment()
    {
        // Like a vmlinux linked at __START_KERNEL_map: virtual = physical + 0xffffffff80000000.
        const ulong Kernel = 0xffff_ffff_8000_0000;
        var builder = ElfBuilder.WithSegment(Code, physical: 0x100_0000, memorySize: 0x4000, virtualOffset: Kernel);
        builder.Entry = Kernel + 0x100_0123;
        Assert.Equal(0x100_0123UL, Parse(builder.Build()).EntryPhysicalAddress);
    }

    [Fact]
    public void ElfKernelImage_KeepsOnlyLoadSegmentsAndSpansThemAll()
    {
        var builder = ElfBuilder.WithSegment(Code, physical: 0x200_0000);
        builder.ProgramHeaders.Insert(0, new ElfBuilder.ProgramHeader(4, 0, 0, 0, 0x10, 0x10)); // PT_NOTE
        builder.ProgramHeaders.Add(new ElfBuilder.ProgramHeader(1, 0x1000, 0x100_0000, 0x100_0000, 0x100, 0x800));
        builder.ProgramHeaders.Add(new ElfBuilder.ProgramHeader(0x6474e551, 0, 0, 0, 0, 0)); // PT_GNU_STACK
        builder.Entry = 0x100_0000;
        var image = Parse(builder.Build());
        Assert.Equal(2, image.Segments.Count);
        Assert.Equal(0x200_0000UL, image.Segments[0].PhysicalAddress);
        Assert.Equal(0x100_0000UL, image.Segments[1].PhysicalAddress);
        Assert.Equal(0x100_0000UL, image.LowestAddress);
        Assert.Equal(0x200_0000UL + (ulong)Code.Length, image.EndAddress);
        Assert.Equal(0x100_0000UL, image.EntryPhysicalAddress);
    }

    [Fact]
    public void ElfKernelImage_EntryInBssPartOfSegmentIsAccepted()
    {
        var builder = ElfBuilder.WithSegment(Code, physical: 0x100_0000, memorySize: 0x10000);
        builder.Entry = 0x100_ffff;
        Assert.Equal(0x100_ffffUL, Parse(builder.Build()).EntryPhysicalAddress);
    }

    [Fact]
    public void ElfKernelImage_RejectsNonElf()
    {
        byte[] text = "#!/bin/sh\necho this is not a kernel, but it is long enough to have a header of 64 bytes\n"u8.ToArray();
        var e = Assert.Throws<BootException>(() => Parse(text));
        Assert.Equal($"{Path}: not an ELF file", e.Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsElfShorterThanItsHeader()
    {
        byte[] file = ElfBuilder.WithSegment(Code).Build()[..40];
        var e = Assert.Throws<BootException>(() => Parse(file));
        Assert.Contains("not an ELF file", e.Message);
    }

    [Fact]
    public void ElfKernelImage_Rejects32BitElf()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.Class = 1;
        Assert.Contains("32-bit ELF kernel is not supported", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsBigEndian()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.Data = 2;
        Assert.Contains("not a little-endian", Rejects(builder).Message);
    }

    [Theory]
    [InlineData((ushort)3)]    // EM_386
    [InlineData((ushort)183)]  // EM_AARCH64
    public void ElfKernelImage_RejectsWrongMachine(ushort machine)
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.Machine = machine;
        Assert.Contains($"ELF machine {machine} is not x86-64", Rejects(builder).Message);
    }

    [Theory]
    [InlineData((ushort)1)] // ET_REL
    [InlineData((ushort)3)] // ET_DYN
    [InlineData((ushort)4)] // ET_CORE
    public void ElfKernelImage_RejectsNonExecutable(ushort type)
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.Type = type;
        Assert.Contains($"ELF type {type} is not an executable (ET_EXEC)", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsWrongProgramHeaderSize()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.ProgramHeaderEntrySize = 32;
        Assert.Contains("program header size 32, expected 56", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsProgramHeaderTableOffsetPastEnd()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.ProgramHeaderOffset = 0x10_0000;
        builder.FileLength = 0x2000;
        Assert.Contains("program header table lies outside the file", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsProgramHeaderTableRunningPastEnd()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.ProgramHeaderCountOverride = 200; // 200 * 56 bytes from offset 64 > file length
        Assert.Contains("program header table lies outside the file", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsEmptyProgramHeaderTable()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.ProgramHeaderCountOverride = 0;
        Assert.Contains("program header table lies outside the file", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsSegmentOffsetOutsideFile()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.ProgramHeaders[0] = builder.ProgramHeaders[0] with { Offset = 0x10_0000 };
        Assert.Contains("segment 0 (offset 0x100000, 0x300 bytes) lies outside the file", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsSegmentRunningPastEndOfFile()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.FileLength = 0x1000 + Code.Length - 1; // truncated by one byte
        Assert.Contains("segment 0 (offset 0x1000, 0x300 bytes) lies outside the file", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsSegmentSizeThatWouldWrapOffset()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.ProgramHeaders[0] = builder.ProgramHeaders[0] with { FileSize = ulong.MaxValue, MemorySize = ulong.MaxValue };
        Assert.Contains("lies outside the file", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsFileSizeLargerThanMemorySize()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.ProgramHeaders[0] = builder.ProgramHeaders[0] with { MemorySize = 0x100 };
        Assert.Contains("segment 0 has more file bytes (0x300) than memory bytes (0x100)", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsSegmentWrappingAddressSpace()
    {
        var builder = ElfBuilder.WithSegment(Code, physical: 0xffff_ffff_ffff_f000, memorySize: 0x2000);
        Assert.Contains("segment 0 wraps around the address space", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_RejectsFileWithoutLoadSegment()
    {
        var builder = ElfBuilder.WithSegment(Code);
        builder.ProgramHeaders[0] = builder.ProgramHeaders[0] with { Type = 4 };
        Assert.Contains("no PT_LOAD segment", Rejects(builder).Message);
    }

    [Theory]
    [InlineData(0x0UL)]
    [InlineData(0xff_ffffUL)]    // one byte before the segment
    [InlineData(0x100_2000UL)]   // first byte after the segment's memory size
    public void ElfKernelImage_RejectsEntryOutsideEverySegment(ulong entry)
    {
        var builder = ElfBuilder.WithSegment(Code, physical: 0x100_0000, memorySize: 0x2000);
        builder.Entry = entry;
        Assert.Contains($"entry point 0x{entry:x} is not inside any loaded segment", Rejects(builder).Message);
    }

    [Fact]
    public void ElfKernelImage_LooksLikeElfChecksMagic()
    {
        Assert.True(ElfKernelImage.LooksLikeElf([0x7f, (byte)'E', (byte)'L', (byte)'F']));
        Assert.False(ElfKernelImage.LooksLikeElf([0x7f, (byte)'E', (byte)'L']));
        Assert.False(ElfKernelImage.LooksLikeElf([0x7f, (byte)'E', (byte)'L', (byte)'f']));
    }
}
