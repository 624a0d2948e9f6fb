using System.Buffers.Binary;

namespace Vmm.Bench;

/// <summary>The smallest guest QEMU boots with PVH: an ELF32 (EM_386) with one PT_LOAD at 1 MiB and a PT_NOTE
/// holding the Xen note XEN_ELFNOTE_PHYS32_ENTRY (type 18), the 32-bit protected-mode entry point.</summary>
public static class PvhGuest
{
    private const uint LoadAddress = 0x100000;
    private const int ElfHeaderSize = 52, ProgramHeaderSize = 32, NoteOffset = 0x100, CodeOffset = 0x1000;
    private const uint XenElfNotePhys32Entry = 18;

    /// <summary>cli; 1: pause; jmp 1b</summary>
    public static byte[] Spinning() => ToElf([0xfa, 0xf3, 0x90, 0xeb, 0xfc]);

    /// <summary>cli; 1: hlt; jmp 1b</summary>
    public static byte[] Halted() => ToElf([0xfa, 0xf4, 0xeb, 0xfd]);

    private static byte[] ToElf(byte[] code)
    {
        byte[] file = new byte[CodeOffset + code.Length];
        Span<byte> h = file;
        h[0] = 0x7f; h[1] = (byte)'E'; h[2] = (byte)'L'; h[3] = (byte)'F';
        h[4] = 1; // ELFCLASS32
        h[5] = 1; // little-endian
        h[6] = 1; // EV_CURRENT
        BinaryPrimitives.WriteUInt16LittleEndian(h[16..], 2);            // ET_EXEC
        BinaryPrimitives.WriteUInt16LittleEndian(h[18..], 3);            // EM_386
        BinaryPrimitives.WriteUInt32LittleEndian(h[20..], 1);
        BinaryPrimitives.WriteUInt32LittleEndian(h[24..], LoadAddress);  // e_entry
        BinaryPrimitives.WriteUInt32LittleEndian(h[28..], ElfHeaderSize); // e_phoff
        BinaryPrimitives.WriteUInt16LittleEndian(h[40..], ElfHeaderSize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[42..], ProgramHeaderSize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[44..], 2);            // e_phnum

        Span<byte> load = h.Slice(ElfHeaderSize, ProgramHeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(load, 1);               // PT_LOAD
        BinaryPrimitives.WriteUInt32LittleEndian(load[4..], CodeOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(load[8..], LoadAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(load[12..], LoadAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(load[16..], (uint)code.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(load[20..], (uint)code.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(load[24..], 7);         // RWX
        BinaryPrimitives.WriteUInt32LittleEndian(load[28..], 0x1000);

        // Note: namesz 4 ("Xen\0"), descsz 4 (the entry), type 18; the bytes after it stay zero, so a reader
        // that takes the entry as 64 bits (QEMU 7.2 reads a size_t) gets the same value.
        Span<byte> note = h.Slice(ElfHeaderSize + ProgramHeaderSize, ProgramHeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(note, 4);               // PT_NOTE
        BinaryPrimitives.WriteUInt32LittleEndian(note[4..], NoteOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(note[16..], 20);        // p_filesz
        BinaryPrimitives.WriteUInt32LittleEndian(note[24..], 4);         // R
        BinaryPrimitives.WriteUInt32LittleEndian(note[28..], 4);         // p_align
        Span<byte> n = h[NoteOffset..];
        BinaryPrimitives.WriteUInt32LittleEndian(n, 4);
        BinaryPrimitives.WriteUInt32LittleEndian(n[4..], 4);
        BinaryPrimitives.WriteUInt32LittleEndian(n[8..], XenElfNotePhys32Entry);
        n[12] = (byte)'X'; n[13] = (byte)'e'; n[14] = (byte)'n';
        BinaryPrimitives.WriteUInt32LittleEndian(n[16..], LoadAddress);

        code.CopyTo(file, CodeOffset);
        return file;
    }
}
