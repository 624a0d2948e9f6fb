using System.Buffers.Binary;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Vmm.Bench;

/// <summary>Makes a firmware guest (<see cref="Vmm.Firmware.FirmwareImage"/>: 64-bit code loaded at 1 MiB, entered in
/// long mode) bootable by QEMU: an ELF32 with a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18), which
/// <c>qemu-system-x86_64 -M microvm -kernel</c> enters in 32-bit protected mode with paging off. The entry is a
/// trampoline placed after the firmware code: it identity-maps the first 4 GiB with 2 MiB pages (tables at 64 KiB,
/// below anything the firmware guests use), turns on long mode, and jumps to the firmware's entry at 1 MiB, as
/// vmm's vmlinux path would have entered it. So vmm and QEMU run the very same guest code.</summary>
public static class PvhGuest
{
    private const uint LoadAddress = 0x100000;
    private const uint TablesAddress = 0x10000; // PML4, PDPT, then 4 page directories
    private const int ElfHeaderSize = 52, ProgramHeaderSize = 32, NoteOffset = 0x100, SegmentOffset = 0x1000;
    private const uint XenElfNotePhys32Entry = 18;
    // Offsets in the trampoline: the 32-bit code, then the 64-bit tail, the GDT and the GDTR.
    private const uint LongModeOffset = 0x100, GdtOffset = 0x140, GdtrOffset = 0x160, TrampolineSize = 0x170;

    /// <summary>The PVH form of <paramref name="firmwareElf"/>, an ELF that <see cref="Vmm.Firmware.FirmwareImage.ToElf"/>
    /// wrote (code at file offset 0x1000, loaded at 1 MiB, entered at its first byte).</summary>
    public static byte[] FromFirmwareElf(byte[] firmwareElf)
    {
        if (BinaryPrimitives.ReadUInt64LittleEndian(firmwareElf.AsSpan(24)) != LoadAddress)
            throw new ArgumentException("not a firmware guest entered at 1 MiB", nameof(firmwareElf));
        byte[] code = firmwareElf[SegmentOffset..];
        uint trampoline = LoadAddress + (uint)((code.Length + 0xfff) & ~0xfff);
        byte[] segment = new byte[trampoline - LoadAddress + TrampolineSize];
        code.CopyTo(segment, 0);
        Trampoline(trampoline).CopyTo(segment, trampoline - LoadAddress);
        return ToElf(segment, trampoline);
    }

    private static byte[] Trampoline(uint at)
    {
        var a = new Assembler(32);
        var mapNext = a.CreateLabel();
        a.cli();
        a.mov(edi, TablesAddress);
        a.xor(eax, eax);
        a.mov(ecx, 0x6000 / 4);
        a.rep.stosd();
        a.mov(__dword_ptr[TablesAddress], TablesAddress + 0x1000 + 3);            // PML4[0] -> PDPT
        for (uint gib = 0; gib < 4; gib++)                                         // PDPT[g] -> directory g
            a.mov(__dword_ptr[TablesAddress + 0x1000 + gib * 8], TablesAddress + 0x2000 + gib * 0x1000 + 3);
        a.mov(edi, TablesAddress + 0x2000);
        a.mov(eax, 0x83);                                                          // present, writable, 2 MiB
        a.mov(ecx, 4 * 512);
        a.Label(ref mapNext);
        a.mov(__dword_ptr[edi], eax);
        a.add(eax, 0x200000);
        a.add(edi, 8);
        a.dec(ecx);
        a.jnz(mapNext);
        a.mov(eax, cr4);
        a.or(eax, 0x20);                                                           // PAE
        a.mov(cr4, eax);
        a.mov(eax, TablesAddress);
        a.mov(cr3, eax);
        a.mov(ecx, 0xc0000080);                                                    // EFER
        a.rdmsr();
        a.or(eax, 0x100);                                                          // LME
        a.wrmsr();
        a.mov(eax, cr0);
        a.or(eax, unchecked((int)0x80000001));                                     // PG, PE
        a.mov(cr0, eax);
        a.lgdt(__[at + GdtrOffset]);
        a.jmp(0x08, at + LongModeOffset);                                          // far: into the 64-bit code segment
        using var stream = new MemoryStream();
        a.Assemble(new StreamCodeWriter(stream), at);
        byte[] code32 = stream.ToArray();
        if (code32.Length > LongModeOffset) throw new InvalidOperationException("the trampoline outgrew its slot");

        byte[] t = new byte[TrampolineSize];
        code32.CopyTo(t, 0);
        // mov ax, 0x10; mov ds, ax; mov es, ax; mov ss, ax; xor esi, esi; mov eax, 0x100000; jmp rax
        byte[] code64 = [0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0x31, 0xf6, 0xb8, 0, 0, 0, 0, 0xff, 0xe0];
        BinaryPrimitives.WriteUInt32LittleEndian(code64.AsSpan(13), LoadAddress);
        code64.CopyTo(t, LongModeOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(t.AsSpan((int)GdtOffset + 8), 0x00af_9a00_0000_ffff);   // 0x08: 64-bit code
        BinaryPrimitives.WriteUInt64LittleEndian(t.AsSpan((int)GdtOffset + 16), 0x00cf_9200_0000_ffff);  // 0x10: data
        BinaryPrimitives.WriteUInt16LittleEndian(t.AsSpan((int)GdtrOffset), 3 * 8 - 1);
        BinaryPrimitives.WriteUInt32LittleEndian(t.AsSpan((int)GdtrOffset + 2), at + GdtOffset);
        return t;
    }

    private static byte[] ToElf(byte[] segment, uint entry)
    {
        byte[] file = new byte[SegmentOffset + segment.Length];
        Span<byte> h = file;
        h[0] = 0x7f; h[1] = (byte)'E'; h[2] = (byte)'L'; h[3] = (byte)'F';
        h[4] = 1; // ELFCLASS32
        h[5] = 1; // little-endian
        h[6] = 1; // EV_CURRENT
        BinaryPrimitives.WriteUInt16LittleEndian(h[16..], 2);              // ET_EXEC
        BinaryPrimitives.WriteUInt16LittleEndian(h[18..], 3);              // EM_386
        BinaryPrimitives.WriteUInt32LittleEndian(h[20..], 1);
        BinaryPrimitives.WriteUInt32LittleEndian(h[24..], entry);          // e_entry
        BinaryPrimitives.WriteUInt32LittleEndian(h[28..], ElfHeaderSize);  // e_phoff
        BinaryPrimitives.WriteUInt16LittleEndian(h[40..], ElfHeaderSize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[42..], ProgramHeaderSize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[44..], 2);              // e_phnum

        Span<byte> load = h.Slice(ElfHeaderSize, ProgramHeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(load, 1);                 // PT_LOAD
        BinaryPrimitives.WriteUInt32LittleEndian(load[4..], SegmentOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(load[8..], LoadAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(load[12..], LoadAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(load[16..], (uint)segment.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(load[20..], (uint)segment.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(load[24..], 7);           // RWX
        BinaryPrimitives.WriteUInt32LittleEndian(load[28..], 0x1000);

        // Note: namesz 4 ("Xen\0"), descsz 4 (the entry), type 18; the bytes after it stay zero, so a reader
        // that takes the entry as 64 bits (QEMU 7.2 reads a size_t) gets the same value.
        Span<byte> note = h.Slice(ElfHeaderSize + ProgramHeaderSize, ProgramHeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(note, 4);                 // PT_NOTE
        BinaryPrimitives.WriteUInt32LittleEndian(note[4..], NoteOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(note[16..], 20);          // p_filesz
        BinaryPrimitives.WriteUInt32LittleEndian(note[24..], 4);           // R
        BinaryPrimitives.WriteUInt32LittleEndian(note[28..], 4);           // p_align
        Span<byte> n = h[NoteOffset..];
        BinaryPrimitives.WriteUInt32LittleEndian(n, 4);
        BinaryPrimitives.WriteUInt32LittleEndian(n[4..], 4);
        BinaryPrimitives.WriteUInt32LittleEndian(n[8..], XenElfNotePhys32Entry);
        n[12] = (byte)'X'; n[13] = (byte)'e'; n[14] = (byte)'n';
        BinaryPrimitives.WriteUInt32LittleEndian(n[16..], entry);

        segment.CopyTo(file, SegmentOffset);
        return file;
    }
}
