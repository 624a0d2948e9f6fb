using System.Buffers.Binary;

namespace Vmm.Tests.Boot;

/// <summary>Builds a minimal bzImage: the real-mode setup (setup_sects + 1 sectors, with the setup header
/// at 0x1f1) followed by the protected-mode kernel (<see cref="Payload"/>).</summary>
internal sealed class BzImageBuilder
{
    public ushort Version = 0x020f;
    public byte SetupSectors = 4;
    public byte LoadFlags = 0x01;          // LOADED_HIGH
    public ushort XLoadFlags = 0x0001;     // XLF_KERNEL_64
    public ulong PreferredAddress = 0x100_0000;
    public uint InitSize = 0x20_0000;
    public uint InitrdAddressMax = 0x7fff_ffff;
    public uint CommandLineSize = 2047;
    public byte Relocatable = 1;
    public byte HeaderLength = 0x6a;       // byte 0x201: the jump at 0x200 over the header; 0x202 + 0x6a = 0x26c
    public byte[] Payload = PatternBytes(8192, seed: 0x31);
    /// <summary>syssize, in 16-byte units; null: what the payload takes, as the kernel's build writes it.</summary>
    public uint? SysSize;

    public int EffectiveSetupSectors => SetupSectors == 0 ? 4 : SetupSectors;
    public int ProtectedModeOffset => (EffectiveSetupSectors + 1) * 512;

    public byte[] Build()
    {
        byte[] file = new byte[ProtectedModeOffset + Payload.Length];
        Span<byte> h = file;
        h[0x1f1] = SetupSectors;
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x1f4..], SysSize ?? (uint)((Payload.Length + 15) / 16));
        BinaryPrimitives.WriteUInt16LittleEndian(h[0x1fe..], 0xaa55);
        h[0x200] = 0xeb;
        h[0x201] = HeaderLength;
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x202..], 0x53726448); // "HdrS"
        BinaryPrimitives.WriteUInt16LittleEndian(h[0x206..], Version);
        h[0x211] = LoadFlags;
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x214..], 0x100000);    // code32_start as built
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x22c..], InitrdAddressMax);
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x230..], 0x20_0000);   // kernel_alignment
        h[0x234] = Relocatable;
        BinaryPrimitives.WriteUInt16LittleEndian(h[0x236..], XLoadFlags);
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x238..], CommandLineSize);
        BinaryPrimitives.WriteUInt64LittleEndian(h[0x258..], PreferredAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(h[0x260..], InitSize);
        Payload.CopyTo(file, ProtectedModeOffset);
        return file;
    }

    public static byte[] PatternBytes(int count, int seed)
    {
        var bytes = new byte[count];
        for (int i = 0; i < count; i++) bytes[i] = (byte)(i * 7 + seed + (i >> 8));
        return bytes;
    }
}

/// <summary>Builds an ELF64 file with the given program headers; every field can be made wrong on purpose.</summary>
internal sealed class ElfBuilder
{
    public sealed record ProgramHeader(uint Type, ulong Offset, ulong VirtualAddress, ulong PhysicalAddress, ulong FileSize, ulong MemorySize);

    public byte Class = 2;           // ELFCLASS64
    public byte Data = 1;            // little-endian
    public ushort Type = 2;          // ET_EXEC
    public ushort Machine = 62;      // EM_X86_64
    public ulong Entry = 0x100_0000;
    public ulong ProgramHeaderOffset = 64;
    public ushort ProgramHeaderEntrySize = 56;
    public ushort? ProgramHeaderCountOverride;
    public List<ProgramHeader> ProgramHeaders = [];
    /// <summary>Bytes placed in the file at the given offsets (segment contents).</summary>
    public List<(long Offset, byte[] Bytes)> Contents = [];
    public long? FileLength;

    /// <summary>The common case: one PT_LOAD at <paramref name="physical"/> (virtual = physical + <paramref name="virtualOffset"/>),
    /// contents at file offset 0x1000.</summary>
    public static ElfBuilder WithSegment(byte[] code, ulong physical = 0x100_0000, ulong memorySize = 0, ulong virtualOffset = 0)
    {
        var b = new ElfBuilder { Entry = physical };
        b.ProgramHeaders.Add(new ProgramHeader(1, 0x1000, physical + virtualOffset, physical, (ulong)code.Length,
            memorySize == 0 ? (ulong)code.Length : memorySize));
        b.Contents.Add((0x1000, code));
        return b;
    }

    public byte[] Build()
    {
        long end = Math.Max(64, (long)ProgramHeaderOffset + ProgramHeaders.Count * 56);
        foreach (var (offset, bytes) in Contents) end = Math.Max(end, offset + bytes.Length);
        byte[] file = new byte[FileLength ?? end];
        Span<byte> h = file;
        h[0] = 0x7f; h[1] = (byte)'E'; h[2] = (byte)'L'; h[3] = (byte)'F';
        h[4] = Class;
        h[5] = Data;
        h[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(h[16..], Type);
        BinaryPrimitives.WriteUInt16LittleEndian(h[18..], Machine);
        BinaryPrimitives.WriteUInt32LittleEndian(h[20..], 1);
        BinaryPrimitives.WriteUInt64LittleEndian(h[24..], Entry);
        BinaryPrimitives.WriteUInt64LittleEndian(h[32..], ProgramHeaderOffset);
        BinaryPrimitives.WriteUInt16LittleEndian(h[52..], 64);
        BinaryPrimitives.WriteUInt16LittleEndian(h[54..], ProgramHeaderEntrySize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[56..], ProgramHeaderCountOverride ?? (ushort)ProgramHeaders.Count);
        for (int i = 0; i < ProgramHeaders.Count; i++)
        {
            long at = (long)ProgramHeaderOffset + i * 56;
            if (at + 56 > file.Length) break;
            Span<byte> ph = h.Slice((int)at, 56);
            var p = ProgramHeaders[i];
            BinaryPrimitives.WriteUInt32LittleEndian(ph, p.Type);
            BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], 7);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], p.Offset);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[16..], p.VirtualAddress);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], p.PhysicalAddress);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], p.FileSize);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], p.MemorySize);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[48..], 0x1000);
        }
        foreach (var (offset, bytes) in Contents)
            if (offset < file.Length) bytes.AsSpan(0, (int)Math.Min(bytes.Length, file.Length - offset)).CopyTo(h[(int)offset..]);
        return file;
    }
}

/// <summary>A temporary directory deleted at the end of the test.</summary>
internal sealed class TempDirectory : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("vmm-unit-").FullName;

    public string File(string name, byte[] contents)
    {
        string path = System.IO.Path.Combine(Path, name);
        System.IO.File.WriteAllBytes(path, contents);
        return path;
    }

    public string SparseFile(string name, long length, byte[]? head = null)
    {
        string path = System.IO.Path.Combine(Path, name);
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        if (head is not null) stream.Write(head);
        stream.SetLength(length);
        return path;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
