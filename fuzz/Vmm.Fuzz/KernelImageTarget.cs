using System.Buffers.Binary;
using Vmm.Boot;
using Vmm.Memory;

namespace Vmm.Fuzz;

/// <summary>The kernel loader (<see cref="LinuxLoader"/>) on a file a user passed as <c>--kernel</c>: a bzImage
/// (setup header, protected-mode kernel) or an ELF vmlinux (program headers, segments), loaded into 64 MiB of
/// RAM. It may only refuse with one of vmm's failures (a <see cref="BootException"/>, a RAM range it does not
/// have). The two formats are two targets so each gets seeds of its own kind.</summary>
public sealed class KernelImageTarget(KernelImageTarget.Format format) : IFuzzTarget
{
    public enum Format { BzImage, Elf }

    private const ulong RamBytes = 64UL << 20;

    // One file and one mapping per process, reused: the loader reads a path, and mapping RAM per input would dominate.
    private static readonly string ImagePath = Path.Combine(Path.GetTempPath(), $"vmm-fuzz-kernel-{Environment.ProcessId}");
    [ThreadStatic] private static GuestMemory? t_memory;

    public string Name => format == Format.BzImage ? "bzimage" : "elf";

    public string? Run(ReadOnlySpan<byte> input)
    {
        var memory = t_memory ??= GuestMemory.Allocate([(0, RamBytes)]);
        File.WriteAllBytes(ImagePath, input.ToArray());
        try
        {
            LinuxLoader.Load(memory, ImagePath, initrdPath: null, "console=ttyS0");
            return null;
        }
        catch (VmmException refused)
        {
            return refused.Message.Replace(ImagePath, "KERNEL");
        }
    }

    public IEnumerable<byte[]> Generate(int count, int seed) =>
        Mutations.Mix(count, seed, format == Format.BzImage ? BzImage : Elf, maxRandomBytes: 8192);

    /// <summary>A bzImage as the kernel's build lays it out: setup sectors with the header at 0x1f1, then the
    /// protected-mode kernel of syssize paragraphs.</summary>
    private static byte[] BzImage(Random random)
    {
        int setupSectors = random.Next(1, 9);
        int payloadBytes = random.Next(0, 64 * 1024);
        int protectedModeOffset = (setupSectors + 1) * 512;
        var file = new byte[protectedModeOffset + payloadBytes];
        random.NextBytes(file.AsSpan(protectedModeOffset));
        Span<byte> h = file;
        h[0x1f1] = (byte)setupSectors;
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x1f4..], (uint)((payloadBytes + 15) / 16));
        BinaryPrimitives.WriteUInt16LittleEndian(h[0x1fe..], 0xaa55);
        h[0x200] = 0xeb;
        h[0x201] = (byte)random.Next(0x66, 0x80);
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x202..], 0x53726448); // "HdrS"
        BinaryPrimitives.WriteUInt16LittleEndian(h[0x206..], (ushort)random.Next(0x0209, 0x0210));
        h[0x211] = (byte)(random.Next(8) == 0 ? 0 : 1);
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x214..], 0x100000);
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x22c..], random.Next(2) == 0 ? 0x7fff_ffffu : (uint)random.Next());
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x230..], 0x20_0000);
        h[0x234] = (byte)random.Next(2);
        BinaryPrimitives.WriteUInt16LittleEndian(h[0x236..], (ushort)random.Next(4));
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x238..], (uint)random.Next(256, 4096));
        BinaryPrimitives.WriteUInt64LittleEndian(h[0x258..], (ulong)random.Next(0, 48) << 20);
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x260..], (uint)random.Next(0, 32 << 20));
        return file;
    }

    /// <summary>An ELF64 x86-64 executable with one to three PT_LOAD segments somewhere in the first 64 MiB.</summary>
    private static byte[] Elf(Random random)
    {
        const int HeaderBytes = 64, ProgramHeaderBytes = 56;
        int segments = random.Next(1, 4);
        int dataOffset = 0x1000;
        var contents = new List<(ulong Physical, byte[] Bytes, ulong MemorySize)>();
        for (int i = 0; i < segments; i++)
        {
            var bytes = Mutations.RandomBytes(random, random.Next(0, 16 * 1024));
            ulong physical = (ulong)random.Next(1, 48) << 20;
            contents.Add((physical, bytes, (ulong)bytes.Length + (ulong)random.Next(0, 1 << 20)));
        }
        int fileBytes = dataOffset + contents.Sum(c => c.Bytes.Length);
        var file = new byte[fileBytes];
        Span<byte> e = file;
        ReadOnlySpan<byte> magic = [0x7f, (byte)'E', (byte)'L', (byte)'F'];
        magic.CopyTo(e);
        e[4] = 2;
        e[5] = 1;
        e[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(e[16..], 2);
        BinaryPrimitives.WriteUInt16LittleEndian(e[18..], 62);
        BinaryPrimitives.WriteUInt64LittleEndian(e[24..], contents[0].Physical);
        BinaryPrimitives.WriteUInt64LittleEndian(e[32..], HeaderBytes);
        BinaryPrimitives.WriteUInt16LittleEndian(e[54..], ProgramHeaderBytes);
        BinaryPrimitives.WriteUInt16LittleEndian(e[56..], (ushort)segments);
        int offset = dataOffset;
        for (int i = 0; i < segments; i++)
        {
            var ph = e.Slice(HeaderBytes + i * ProgramHeaderBytes, ProgramHeaderBytes);
            var (physical, bytes, memorySize) = contents[i];
            BinaryPrimitives.WriteUInt32LittleEndian(ph, 1);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], (ulong)offset);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[16..], physical + 0xffff_ffff_8000_0000);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], physical);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], (ulong)bytes.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], memorySize);
            bytes.CopyTo(e[offset..]);
            offset += bytes.Length;
        }
        return file;
    }
}
