using System.Buffers.Binary;
using System.Text;
using Vmm.Arch;
using Vmm.Boot;
using Vmm.Firmware;
using Vmm.Memory;
using Xunit;

namespace Vmm.Tests.Boot;

public sealed class LinuxLoaderTests : IDisposable
{
    private const ulong MiB = 1UL << 20;
    private const ulong GuestBytes = 64 * MiB;

    private readonly TempDirectory _dir = new();
    private readonly GuestMemory _memory = GuestMemory.Allocate(X86Layout.RamRanges(GuestBytes));

    public void Dispose()
    {
        _memory.Dispose();
        _dir.Dispose();
    }

    private static readonly byte[] Code = BzImageBuilder.PatternBytes(0x1234, seed: 0x42);

    private byte[] ReadGuest(ulong address, int count)
    {
        var bytes = new byte[count];
        _memory.Read(address, bytes);
        return bytes;
    }

    private string CommandLineInGuest()
    {
        var span = _memory.GetSpan(X86Layout.CommandLineAddress, X86Layout.CommandLineMaxBytes);
        int nul = span.IndexOf((byte)0);
        Assert.True(nul >= 0, "command line is not NUL-terminated");
        return Encoding.UTF8.GetString(span[..nul]);
    }

    private uint ZeroPage32(int offset) => _memory.Read<uint>(X86Layout.ZeroPageAddress + (ulong)offset);

    private static ulong InitrdAddressFor(ulong limit, ulong size) => (limit - size) & ~0xfffUL;

    // ---- ELF vmlinux ----

    [Fact]
    public void LinuxLoader_LoadsElfKernelAtItsPhysicalAddress()
    {
        string kernel = _dir.File("vmlinux", FirmwareImage.ToElf(Code));
        var setup = LinuxLoader.Load(_memory, kernel, null, "console=ttyS0");

        Assert.Equal(Code, ReadGuest(FirmwareImage.LoadAddress, Code.Length));
        Assert.Equal(FirmwareImage.LoadAddress, setup.EntryAddress);
        Assert.Equal(KernelEntryMode.Long64, setup.EntryMode);
        Assert.Equal(FirmwareImage.LoadAddress, setup.KernelStart);
        Assert.Equal(FirmwareImage.LoadAddress + (ulong)Code.Length, setup.KernelEnd);
        Assert.Equal(X86Layout.ZeroPageAddress, setup.ZeroPageAddress);
        Assert.Equal(0UL, setup.InitrdAddress);
        Assert.Equal(0UL, setup.InitrdSizeBytes);
        Assert.Equal("console=ttyS0", setup.CommandLine);
    }

    [Fact]
    public void LinuxLoader_LoadsEveryElfSegmentAndZeroesBss()
    {
        byte[] second = BzImageBuilder.PatternBytes(0x800, seed: 9);
        var builder = ElfBuilder.WithSegment(Code, physical: 0x100_0000, memorySize: 0x4000);
        builder.ProgramHeaders.Add(new ElfBuilder.ProgramHeader(1, 0x4000, 0x180_0000, 0x180_0000, (ulong)second.Length, (ulong)second.Length));
        builder.Contents.Add((0x4000, second));
        _memory.Fill(0x100_0000, 0x8000, 0xaa); // stale contents the loader must clear in the bss

        var setup = LinuxLoader.Load(_memory, _dir.File("vmlinux", builder.Build()), null, "");

        Assert.Equal(Code, ReadGuest(0x100_0000, Code.Length));
        Assert.All(ReadGuest(0x100_0000 + (ulong)Code.Length, 0x4000 - Code.Length), b => Assert.Equal(0, b));
        Assert.Equal((byte)0xaa, _memory.Read<byte>(0x100_4000)); // past memsz: untouched
        Assert.Equal(second, ReadGuest(0x180_0000, second.Length));
        Assert.Equal(0x100_0000UL, setup.KernelStart);
        Assert.Equal(0x180_0000UL + (ulong)second.Length, setup.KernelEnd);
    }

    [Fact]
    public void LinuxLoader_WritesNulTerminatedCommandLine()
    {
        _memory.Fill(X86Layout.CommandLineAddress, 0x100, 0xaa);
        LinuxLoader.Load(_memory, _dir.File("vmlinux", FirmwareImage.ToElf(Code)), null, "console=ttyS0 root=/dev/vda rw é");
        byte[] expected = Encoding.UTF8.GetBytes("console=ttyS0 root=/dev/vda rw é");
        Assert.Equal(expected, ReadGuest(X86Layout.CommandLineAddress, expected.Length));
        Assert.Equal((byte)0, _memory.Read<byte>(X86Layout.CommandLineAddress + (ulong)expected.Length));
        Assert.Equal("console=ttyS0 root=/dev/vda rw é", CommandLineInGuest());
    }

    [Fact]
    public void LinuxLoader_EmptyCommandLineIsJustNul()
    {
        _memory.Write<byte>(X86Layout.CommandLineAddress, 0xaa);
        LinuxLoader.Load(_memory, _dir.File("vmlinux", FirmwareImage.ToElf(Code)), null, "");
        Assert.Equal((byte)0, _memory.Read<byte>(X86Layout.CommandLineAddress));
        Assert.Equal(0x20000u, ZeroPage32(0x228));
    }

    [Fact]
    public void LinuxLoader_ZeroPageHasE820MapAndCommandLinePointer()
    {
        LinuxLoader.Load(_memory, _dir.File("vmlinux", FirmwareImage.ToElf(Code)), null, "quiet");

        Assert.Equal((uint)X86Layout.CommandLineAddress, ZeroPage32(0x228));
        Assert.Equal(0u, ZeroPage32(0x0c8));
        Assert.Equal((ushort)0xaa55, _memory.Read<ushort>(X86Layout.ZeroPageAddress + 0x1fe));
        Assert.Equal(0x53726448u, ZeroPage32(0x202));
        Assert.Equal((byte)0xff, _memory.Read<byte>(X86Layout.ZeroPageAddress + 0x210));

        var expected = E820Entry.MapFor(X86Layout.RamRanges(GuestBytes));
        Assert.Equal((byte)expected.Count, _memory.Read<byte>(X86Layout.ZeroPageAddress + 0x1e8));
        for (int i = 0; i < expected.Count; i++)
        {
            ulong slot = X86Layout.ZeroPageAddress + 0x2d0 + (ulong)i * 20;
            Assert.Equal(expected[i].Address, _memory.Read<ulong>(slot));
            Assert.Equal(expected[i].SizeBytes, _memory.Read<ulong>(slot + 8));
            Assert.Equal((uint)expected[i].Type, _memory.Read<uint>(slot + 16));
        }
        Assert.Equal(0x100000UL, _memory.Read<ulong>(X86Layout.ZeroPageAddress + 0x2d0 + 2 * 20));
        Assert.Equal(GuestBytes - 0x100000, _memory.Read<ulong>(X86Layout.ZeroPageAddress + 0x2d0 + 2 * 20 + 8));
    }

    // ---- bzImage ----

    [Fact]
    public void LinuxLoader_LoadsBzImageProtectedModeKernelAtPreferredAddress()
    {
        var builder = new BzImageBuilder { SetupSectors = 7, PreferredAddress = 0x100_0000, InitSize = 0x30_0000 };
        var setup = LinuxLoader.Load(_memory, _dir.File("bzImage", builder.Build()), null, "console=ttyS0");

        Assert.Equal(builder.Payload, ReadGuest(0x100_0000, builder.Payload.Length));
        Assert.Equal(0x100_0000UL, setup.KernelStart);
        Assert.Equal(0x130_0000UL, setup.KernelEnd); // init_size, larger than the file
        Assert.Equal(KernelEntryMode.Long64, setup.EntryMode);
        Assert.Equal(0x100_0200UL, setup.EntryAddress);
    }

    [Fact]
    public void LinuxLoader_BzImageKernelEndIsFileSizeWhenLargerThanInitSize()
    {
        var builder = new BzImageBuilder { InitSize = 0x1000, Payload = BzImageBuilder.PatternBytes(0x5000, 1) };
        var setup = LinuxLoader.Load(_memory, _dir.File("bzImage", builder.Build()), null, "");
        Assert.Equal(builder.PreferredAddress + 0x5000, setup.KernelEnd);
    }

    [Fact]
    public void LinuxLoader_BzImageWithoutKernel64EntersAt32BitEntry()
    {
        var builder = new BzImageBuilder { XLoadFlags = 0 };
        var setup = LinuxLoader.Load(_memory, _dir.File("bzImage", builder.Build()), null, "");
        Assert.Equal(KernelEntryMode.Protected32, setup.EntryMode);
        Assert.Equal(builder.PreferredAddress, setup.EntryAddress);
    }

    [Fact]
    public void LinuxLoader_BzImageWithoutPreferredAddressLoadsAtOneMiB()
    {
        var builder = new BzImageBuilder { PreferredAddress = 0 };
        var setup = LinuxLoader.Load(_memory, _dir.File("bzImage", builder.Build()), null, "");
        Assert.Equal(0x100000UL, setup.KernelStart);
        Assert.Equal(0x100200UL, setup.EntryAddress);
        Assert.Equal(builder.Payload, ReadGuest(0x100000, builder.Payload.Length));
    }

    [Fact]
    public void LinuxLoader_BzImageZeroPageStartsFromItsSetupHeader()
    {
        var builder = new BzImageBuilder { Version = 0x020d, InitrdAddressMax = 0x37ff_ffff, CommandLineSize = 0x7ff };
        LinuxLoader.Load(_memory, _dir.File("bzImage", builder.Build()), null, "x");
        Assert.Equal((ushort)0x020d, _memory.Read<ushort>(X86Layout.ZeroPageAddress + 0x206));
        Assert.Equal(0x37ff_ffffu, ZeroPage32(0x22c));
        Assert.Equal(0x7ffu, ZeroPage32(0x238));
        Assert.Equal((byte)builder.SetupSectors, _memory.Read<byte>(X86Layout.ZeroPageAddress + 0x1f1));
        Assert.Equal((byte)0xff, _memory.Read<byte>(X86Layout.ZeroPageAddress + 0x210));
        Assert.Equal((uint)builder.PreferredAddress, ZeroPage32(0x214)); // code32_start
        Assert.Equal((uint)X86Layout.CommandLineAddress, ZeroPage32(0x228));
        Assert.Equal((byte)3, _memory.Read<byte>(X86Layout.ZeroPageAddress + 0x1e8));
    }

    [Fact]
    public void LinuxLoader_AcceptsCommandLineOfExactlyCmdlineSize()
    {
        var builder = new BzImageBuilder { CommandLineSize = 16 };
        string line = new('a', 16);
        var setup = LinuxLoader.Load(_memory, _dir.File("bzImage", builder.Build()), null, line);
        Assert.Equal(line, CommandLineInGuest());
        Assert.Equal(line, setup.CommandLine);
    }

    [Fact]
    public void LinuxLoader_RejectsCommandLineLongerThanCmdlineSize()
    {
        var builder = new BzImageBuilder { CommandLineSize = 16 };
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, _dir.File("bzImage", builder.Build()), null, new string('a', 17)));
        Assert.Equal("the kernel command line is 17 bytes; this kernel accepts at most 16", e.Message);
    }

    [Fact]
    public void LinuxLoader_CountsCommandLineInUtf8Bytes()
    {
        var builder = new BzImageBuilder { CommandLineSize = 16 };
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, _dir.File("bzImage", builder.Build()), null, new string('é', 9)));
        Assert.Contains("is 18 bytes", e.Message);
    }

    [Fact]
    public void LinuxLoader_ElfCommandLineLimitIsTheX86Default()
    {
        string kernel = _dir.File("vmlinux", FirmwareImage.ToElf(Code));
        LinuxLoader.Load(_memory, kernel, null, new string('b', 2048));
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, kernel, null, new string('b', 2049)));
        Assert.Contains("at most 2048", e.Message);
    }

    [Fact]
    public void LinuxLoader_CommandLineNeverOutgrowsItsArea()
    {
        var builder = new BzImageBuilder { CommandLineSize = 0x10_0000 };
        string kernel = _dir.File("bzImage", builder.Build());
        LinuxLoader.Load(_memory, kernel, null, new string('c', 0xffff));
        Assert.Equal((byte)0, _memory.Read<byte>(X86Layout.CommandLineAddress + 0xffff));
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, kernel, null, new string('c', 0x10000)));
        Assert.Contains("at most 65535", e.Message);
    }

    [Fact]
    public void LinuxLoader_RejectsCommandLineWithNul()
    {
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, _dir.File("vmlinux", FirmwareImage.ToElf(Code)), null, "a\0b"));
        Assert.Contains("NUL", e.Message);
    }

    // ---- initramfs ----

    [Fact]
    public void LinuxLoader_PlacesInitrdPageAlignedAtTopOfLowRam()
    {
        byte[] initrd = BzImageBuilder.PatternBytes(10_001, seed: 3);
        string path = _dir.File("initrd.img", initrd);
        var setup = LinuxLoader.Load(_memory, _dir.File("vmlinux", FirmwareImage.ToElf(Code)), path, "");

        ulong expected = InitrdAddressFor(GuestBytes, 10_001);
        Assert.Equal(expected, setup.InitrdAddress);
        Assert.Equal(0UL, setup.InitrdAddress % 4096);
        Assert.True(expected + 10_001 <= GuestBytes);
        Assert.True(expected + 4096 + 10_001 > GuestBytes); // as high as possible
        Assert.Equal(10_001UL, setup.InitrdSizeBytes);
        Assert.Equal(initrd, ReadGuest(expected, initrd.Length));
        Assert.Equal((uint)expected, ZeroPage32(0x218));
        Assert.Equal(10_001u, ZeroPage32(0x21c));
        Assert.Equal(0u, ZeroPage32(0x0c0));
    }

    [Fact]
    public void LinuxLoader_PlacesInitrdBelowInitrdAddrMax()
    {
        var builder = new BzImageBuilder { InitrdAddressMax = 0x2ff_ffff }; // 48 MiB - 1
        string path = _dir.File("initrd.img", BzImageBuilder.PatternBytes(0x1800, seed: 4));
        var setup = LinuxLoader.Load(_memory, _dir.File("bzImage", builder.Build()), path, "");
        Assert.Equal(0x300_0000UL - 0x2000, setup.InitrdAddress);
        Assert.Equal(BzImageBuilder.PatternBytes(0x1800, seed: 4), ReadGuest(setup.InitrdAddress, 0x1800));
    }

    [Fact]
    public void LinuxLoader_ElfInitrdStaysBelowTwoGiBInLargeGuest()
    {
        using var memory = GuestMemory.Allocate(X86Layout.RamRanges(0xe000_0000)); // 3.5 GiB, MAP_NORESERVE
        string path = _dir.File("initrd.img", BzImageBuilder.PatternBytes(5000, seed: 8));
        var setup = LinuxLoader.Load(memory, _dir.File("vmlinux", FirmwareImage.ToElf(Code)), path, "");
        Assert.Equal(InitrdAddressFor(0x8000_0000, 5000), setup.InitrdAddress);
    }

    [Fact]
    public void LinuxLoader_InitrdStaysInLowRamWhenAddrMaxIsAboveTheHole()
    {
        using var memory = GuestMemory.Allocate(X86Layout.RamRanges(0xe000_0000));
        var builder = new BzImageBuilder { InitrdAddressMax = 0xffff_ffff };
        string path = _dir.File("initrd.img", BzImageBuilder.PatternBytes(5000, seed: 8));
        var setup = LinuxLoader.Load(memory, _dir.File("bzImage", builder.Build()), path, "");
        Assert.Equal(InitrdAddressFor(X86Layout.MmioHoleAddress, 5000), setup.InitrdAddress);
        var e820 = Enumerable.Range(0, memory.Read<byte>(X86Layout.ZeroPageAddress + 0x1e8))
            .Select(i => memory.Read<ulong>(X86Layout.ZeroPageAddress + 0x2d0 + (ulong)i * 20)).ToList();
        Assert.Equal([0UL, X86Layout.EbdaAddress, 0x100000UL, X86Layout.FourGiB], e820);
    }

    [Fact]
    public void LinuxLoader_InitrdMayEndExactlyAtKernelEndButNotOverlapIt()
    {
        // Kernel occupies [1 MiB, 2 MiB); 62 MiB of initrd fits exactly in [2 MiB, 64 MiB).
        var builder = ElfBuilder.WithSegment(Code, physical: 0x100000, memorySize: MiB);
        builder.Entry = 0x100000;
        string kernel = _dir.File("vmlinux", builder.Build());

        string fits = _dir.SparseFile("fits.img", (long)(62 * MiB), head: [1, 2, 3]);
        var setup = LinuxLoader.Load(_memory, kernel, fits, "");
        Assert.Equal(2 * MiB, setup.InitrdAddress);
        Assert.Equal(setup.KernelEnd, setup.InitrdAddress);
        Assert.Equal(new byte[] { 1, 2, 3 }, ReadGuest(2 * MiB, 3));

        string tooBig = _dir.SparseFile("too-big.img", (long)(62 * MiB) + 1);
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, kernel, tooBig, ""));
        Assert.Contains(tooBig, e.Message);
        Assert.Contains("kernel's end (0x200000)", e.Message);
        Assert.Contains("--memory", e.Message);
    }

    [Fact]
    public void LinuxLoader_InitrdNeverOverlapsBzImageInitSize()
    {
        // Kernel at 16 MiB with init_size 32 MiB: it owns [16 MiB, 48 MiB) while decompressing.
        var builder = new BzImageBuilder { PreferredAddress = 0x100_0000, InitSize = 0x200_0000 };
        string kernel = _dir.File("bzImage", builder.Build());
        var setup = LinuxLoader.Load(_memory, kernel, _dir.SparseFile("a.img", (long)(16 * MiB)), "");
        Assert.Equal(48 * MiB, setup.InitrdAddress);
        Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, kernel, _dir.SparseFile("b.img", (long)(16 * MiB) + 1), ""));
    }

    [Fact]
    public void LinuxLoader_RejectsInitrdLargerThanMemory()
    {
        string path = _dir.SparseFile("huge.img", (long)(128 * MiB));
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, _dir.File("vmlinux", FirmwareImage.ToElf(Code)), path, ""));
        Assert.StartsWith($"initramfs {path} (131072 KiB) does not fit", e.Message);
        Assert.Contains("--memory", e.Message);
    }

    [Fact]
    public void LinuxLoader_RejectsEmptyInitrd()
    {
        string path = _dir.File("empty.img", []);
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, _dir.File("vmlinux", FirmwareImage.ToElf(Code)), path, ""));
        Assert.Equal($"initramfs {path} is empty", e.Message);
    }

    [Fact]
    public void LinuxLoader_RejectsMissingInitrd()
    {
        string path = Path.Combine(_dir.Path, "no-such.img");
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, _dir.File("vmlinux", FirmwareImage.ToElf(Code)), path, ""));
        Assert.Equal($"initramfs file {path} does not exist", e.Message);
    }

    // ---- kernel file errors ----

    [Fact]
    public void LinuxLoader_RejectsMissingKernel()
    {
        string path = Path.Combine(_dir.Path, "no-such-vmlinux");
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, path, null, ""));
        Assert.Equal($"kernel file {path} does not exist", e.Message);
    }

    [Fact]
    public void LinuxLoader_RejectsKernelInMissingDirectory()
    {
        string path = Path.Combine(_dir.Path, "no-such-dir", "vmlinux");
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, path, null, ""));
        Assert.Equal($"kernel file {path} does not exist", e.Message);
    }

    [Fact]
    public void LinuxLoader_RejectsDirectoryAsKernel()
    {
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, _dir.Path, null, ""));
        Assert.Equal($"kernel {_dir.Path} is a directory, not a file", e.Message);
    }

    [Theory]
    [InlineData("text")]
    [InlineData("empty")]
    public void LinuxLoader_RejectsFileThatIsNotAKernel(string kind)
    {
        byte[] contents = kind == "text" ? Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("hello, not a kernel\n", 200))) : [];
        string path = _dir.File("notes.txt", contents);
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, path, null, ""));
        Assert.StartsWith($"{path} is not a Linux kernel", e.Message);
        Assert.Contains("bzImage", e.Message);
        Assert.Contains("ELF", e.Message);
    }

    [Fact]
    public void LinuxLoader_RejectsTruncatedElfSegment()
    {
        byte[] elf = FirmwareImage.ToElf(Code);
        string path = _dir.File("vmlinux", elf[..^16]);
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, path, null, ""));
        Assert.StartsWith(path + ":", e.Message);
        Assert.Contains("lies outside the file", e.Message);
    }

    [Fact]
    public void LinuxLoader_RejectsBzImageWithBadHeaderNamingTheFile()
    {
        string path = _dir.File("bzImage", new BzImageBuilder { Version = 0x0206 }.Build());
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, path, null, ""));
        Assert.StartsWith(path + ":", e.Message);
        Assert.Contains("older than 2.10", e.Message);
    }

    [Fact]
    public void LinuxLoader_RejectsElfKernelNeedingMoreRamThanTheGuestHas()
    {
        var builder = ElfBuilder.WithSegment(Code, physical: 0x100_0000, memorySize: 128 * MiB);
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, _dir.File("vmlinux", builder.Build()), null, ""));
        Assert.Contains("0x1000000 to 0x9000000", e.Message);
        Assert.Contains("144 MiB", e.Message);
        Assert.Contains("--memory", e.Message);
    }

    [Fact]
    public void LinuxLoader_RejectsBzImageWhoseInitSizeDoesNotFit()
    {
        var builder = new BzImageBuilder { PreferredAddress = 0x100_0000, InitSize = 0x400_0000 }; // 64 MiB from 16 MiB
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, _dir.File("bzImage", builder.Build()), null, ""));
        Assert.Contains("init_size", e.Message);
        Assert.Contains("--memory", e.Message);
    }

    [Fact]
    public void LinuxLoader_RejectsKernelLoadingBelowOneMiB()
    {
        var builder = ElfBuilder.WithSegment(Code, physical: 0x80000);
        string path = _dir.File("vmlinux", builder.Build());
        var e = Assert.Throws<BootException>(() => LinuxLoader.Load(_memory, path, null, ""));
        Assert.Contains("0x80000, below 1 MiB", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void LinuxLoader_ReadsKernelThroughItsFileNotAPreloadedCopy()
    {
        // A kernel larger than the 64 KiB header read: the part past it must still arrive.
        byte[] big = BzImageBuilder.PatternBytes(300_000, seed: 77);
        var setup = LinuxLoader.Load(_memory, _dir.File("vmlinux", FirmwareImage.ToElf(big)), null, "");
        Assert.Equal(big, ReadGuest(setup.KernelStart, big.Length));
        Assert.Equal(BinaryPrimitives.ReadUInt64LittleEndian(big.AsSpan(big.Length - 8)), _memory.Read<ulong>(setup.KernelEnd - 8));
    }
}
