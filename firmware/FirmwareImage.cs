using System.Buffers.Binary;

namespace Vmm.Firmware;

/// <summary>Wraps 64-bit code in a minimal ELF64 executable (one PT_LOAD segment, physical = virtual), so a
/// firmware guest boots through vmm's normal vmlinux path: long mode, identity map, RSI = zero page.</summary>
public static class FirmwareImage
{
    public const ulong LoadAddress = 0x100000;
    private const int ElfHeaderSize = 64, ProgramHeaderSize = 56;
    private const int CodeOffset = 0x1000;

    public static byte[] ToElf(byte[] code, ulong loadAddress = LoadAddress)
    {
        byte[] file = new byte[CodeOffset + code.Length];
        Span<byte> h = file;
        h[0] = 0x7f; h[1] = (byte)'E'; h[2] = (byte)'L'; h[3] = (byte)'F';
        h[4] = 2; // ELFCLASS64
        h[5] = 1; // little-endian
        h[6] = 1; // EV_CURRENT
        BinaryPrimitives.WriteUInt16LittleEndian(h[16..], 2);   // ET_EXEC
        BinaryPrimitives.WriteUInt16LittleEndian(h[18..], 62);  // EM_X86_64
        BinaryPrimitives.WriteUInt32LittleEndian(h[20..], 1);
        BinaryPrimitives.WriteUInt64LittleEndian(h[24..], loadAddress);          // e_entry
        BinaryPrimitives.WriteUInt64LittleEndian(h[32..], ElfHeaderSize);       // e_phoff
        BinaryPrimitives.WriteUInt16LittleEndian(h[52..], ElfHeaderSize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[54..], ProgramHeaderSize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[56..], 1);                   // e_phnum
        Span<byte> ph = h.Slice(ElfHeaderSize, ProgramHeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(ph, 1);                         // PT_LOAD
        BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], 7);                    // RWX
        BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], CodeOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[16..], loadAddress);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], loadAddress);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], (ulong)code.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], (ulong)code.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[48..], 0x1000);
        code.CopyTo(file, CodeOffset);
        return file;
    }
}
