using System.Buffers.Binary;

namespace Vmm.Boot;

/// <summary>An ELF64 x86-64 kernel (vmlinux): its PT_LOAD segments and its physical entry point.</summary>
public sealed class ElfKernelImage
{
    private const uint PtLoad = 1;
    private const ushort EmX8664 = 62;
    private const int ProgramHeaderSize = 56;

    public sealed record Segment(long FileOffset, ulong FileSizeBytes, ulong PhysicalAddress, ulong MemorySizeBytes);

    public required IReadOnlyList<Segment> Segments { get; init; }
    public required ulong EntryPhysicalAddress { get; init; }

    public ulong LowestAddress => Segments.Min(s => s.PhysicalAddress);
    public ulong EndAddress => Segments.Max(s => s.PhysicalAddress + s.MemorySizeBytes);

    public static bool LooksLikeElf(ReadOnlySpan<byte> start) =>
        start.Length >= 4 && start[0] == 0x7f && start[1] == (byte)'E' && start[2] == (byte)'L' && start[3] == (byte)'F';

    /// <summary>Parses the ELF header and program headers; <paramref name="readAt"/> reads the file.</summary>
    public static ElfKernelImage Parse(ReadOnlySpan<byte> header, long fileLength, Func<long, int, byte[]> readAt, string path)
    {
        if (!LooksLikeElf(header) || header.Length < 64)
            throw new BootException($"{path}: not an ELF file");
        if (header[4] != 2) throw new BootException($"{path}: a 32-bit ELF kernel is not supported; use a 64-bit vmlinux or a bzImage");
        if (header[5] != 1) throw new BootException($"{path}: not a little-endian ELF file");
        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(header[16..]);
        ushort machine = BinaryPrimitives.ReadUInt16LittleEndian(header[18..]);
        if (machine != EmX8664) throw new BootException($"{path}: ELF machine {machine} is not x86-64");
        if (type != 2) throw new BootException($"{path}: ELF type {type} is not an executable (ET_EXEC)");
        ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(header[24..]);
        ulong programHeaderOffset = BinaryPrimitives.ReadUInt64LittleEndian(header[32..]);
        ushort programHeaderEntrySize = BinaryPrimitives.ReadUInt16LittleEndian(header[54..]);
        ushort programHeaderCount = BinaryPrimitives.ReadUInt16LittleEndian(header[56..]);
        if (programHeaderEntrySize != ProgramHeaderSize)
            throw new BootException($"{path}: program header size {programHeaderEntrySize}, expected {ProgramHeaderSize}");
        ulong tableBytes = (ulong)programHeaderCount * ProgramHeaderSize;
        if (programHeaderCount == 0 || programHeaderOffset > (ulong)fileLength || tableBytes > (ulong)fileLength - programHeaderOffset)
            throw new BootException($"{path}: program header table lies outside the file");

        byte[] table = readAt((long)programHeaderOffset, (int)tableBytes);
        var segments = new List<Segment>();
        var virtualRanges = new List<(ulong Virtual, ulong Physical, ulong Size)>();
        for (int i = 0; i < programHeaderCount; i++)
        {
            ReadOnlySpan<byte> ph = table.AsSpan(i * ProgramHeaderSize, ProgramHeaderSize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(ph) != PtLoad) continue;
            ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(ph[8..]);
            ulong virtualAddress = BinaryPrimitives.ReadUInt64LittleEndian(ph[16..]);
            ulong physicalAddress = BinaryPrimitives.ReadUInt64LittleEndian(ph[24..]);
            ulong fileSize = BinaryPrimitives.ReadUInt64LittleEndian(ph[32..]);
            ulong memorySize = BinaryPrimitives.ReadUInt64LittleEndian(ph[40..]);
            if (offset > (ulong)fileLength || fileSize > (ulong)fileLength - offset)
                throw new BootException($"{path}: segment {i} (offset 0x{offset:x}, 0x{fileSize:x} bytes) lies outside the file");
            if (fileSize > memorySize)
                throw new BootException($"{path}: segment {i} has more file bytes (0x{fileSize:x}) than memory bytes (0x{memorySize:x})");
            if (physicalAddress + memorySize < physicalAddress)
                throw new BootException($"{path}: segment {i} wraps around the address space");
            segments.Add(new Segment((long)offset, fileSize, physicalAddress, memorySize));
            virtualRanges.Add((virtualAddress, physicalAddress, memorySize));
        }
        if (segments.Count == 0) throw new BootException($"{path}: no PT_LOAD segment");

        // x86-64 vmlinux's e_entry is already physical (phys_startup_64); other linkers give a virtual one.
        ulong? entryPhysical = null;
        foreach (var s in segments)
            if (entry >= s.PhysicalAddress && entry - s.PhysicalAddress < s.MemorySizeBytes) entryPhysical = entry;
        if (entryPhysical is null)
            foreach (var (v, p, size) in virtualRanges)
                if (entry >= v && entry - v < size) entryPhysical = p + (entry - v);
        if (entryPhysical is null)
            throw new BootException($"{path}: entry point 0x{entry:x} is not inside any loaded segment");

        return new ElfKernelImage { Segments = segments, EntryPhysicalAddress = entryPhysical.Value };
    }
}
