using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Vmm.Firmware;

/// <summary>Leaving the boot protocol's CPL0 for CPL3. On the nested backend (kvm_pvm) every CPL0 instruction is
/// emulated, at about a microsecond each, while CPL3 code runs natively: a guest that does real work sets up only
/// what CPL3 needs (GDT, TSS, IDT, user pages) and does its work there.</summary>
public static partial class FirmwareGuests
{
    // The guest's own system tables, in the 2 MiB page above the code; RAM starts zeroed, so only the used
    // entries are written.
    private const uint UserModeGdtAddress = 0x200000;
    private const uint UserModeIdtAddress = 0x201000;
    private const uint UserModeTssAddress = 0x202000;
    /// <summary>PML4, then a PDPT, then four page directories of 2 MiB pages: 0x203000-0x208fff.</summary>
    private const uint UserModePml4Address = 0x203000;
    private const int UserModeMappedGiB = 4;
    /// <summary>Top of the page 0x209000: the stack exception handlers run on (TSS.RSP0).</summary>
    private const uint KernelStackTop = 0x20a000;
    private const uint UserStackTop = 0x20b000;
    /// <summary>Where lgdt and lidt read their operand: after the GDT's entries, before the IDT.</summary>
    private const int DescriptorTableRegisterOffset = 0x800;

    // The kernel selectors are those of vmm's boot GDT (code 0x10, data 0x18), so the segment state the vCPU
    // starts with stays true to the table once ours replaces it.
    private const ushort KernelCodeSelector = 0x10, UserDataSelector = 0x20 | 3, UserCodeSelector = 0x28 | 3, TssSelector = 0x30;
    private const ulong KernelCode64Descriptor = 0x00af_9b00_0000_ffff, KernelDataDescriptor = 0x00cf_9300_0000_ffff;
    private const ulong UserDataDescriptor = 0x00cf_f300_0000_ffff, UserCode64Descriptor = 0x00af_fb00_0000_ffff;
    /// <summary>The TSS: 0x68 bytes, then an I/O permission bitmap for ports below <see cref="UserPortsBelow"/>
    /// (all zero, all allowed: RAM starts zeroed), then the 0xff byte that must end the bitmap.</summary>
    private const int TssIoBitmapOffset = 0x68, UserPortsBelow = 0x800, TssLimit = TssIoBitmapOffset + UserPortsBelow / 8;
    /// <summary>IOPL 3 lets CPL3 use in and out itself on hardware KVM (each still exits to vmm; see the TSS's I/O
    /// bitmap for kvm_pvm); bit 1 is reserved as one; IF stays clear, as there is no interrupt handler.</summary>
    private const int UserRflags = 0x3002;
    private const ulong PagePresent = 1, PageWritable = 2, PageUser = 4, PageSize2M = 0x80;
    private const int ExceptionVectorCount = 32;

    /// <summary>Sets up CPL3 and irets to <paramref name="userEntry"/>. An exception, from either level, prints
    /// "FAULT xx" (the vector, hex) on COM1 and exits with <see cref="ExitValueFailure"/>. Uses the hex printer at
    /// <paramref name="printHex"/>, which the caller emits.</summary>
    private static void EmitEnterUserMode(Assembler a, Label userEntry, Label printHex)
    {
        var faultHandlers = new Label[ExceptionVectorCount];
        for (int v = 0; v < faultHandlers.Length; v++) faultHandlers[v] = a.CreateLabel();
        var writeGate = a.CreateLabel();

        a.mov(esp, KernelStackTop);
        EmitGdtAndTss(a);
        EmitIdt(a, faultHandlers, writeGate);
        EmitUserPageTables(a);
        // iretq pops RIP, CS, RFLAGS, RSP and SS: a return to an outer level, which is how CPL0 enters CPL3.
        a.push(UserDataSelector);
        a.push((int)UserStackTop);
        a.push(UserRflags);
        a.push(UserCodeSelector);
        a.lea(rax, __[userEntry]);
        a.push(rax);
        a.iretq();

        EmitWriteInterruptGateRoutine(a, writeGate);
        EmitFaultHandlers(a, faultHandlers, printHex);
    }

    private static void EmitGdtAndTss(Assembler a)
    {
        const ulong tssBase = UserModeTssAddress;
        ulong tssLow = TssLimit | (tssBase & 0xff_ffff) << 16 | 0x89UL << 40 | (tssBase >> 24 & 0xff) << 56; // present, available 64-bit TSS
        ulong tssHigh = tssBase >> 32;
        ulong[] gdt = [0, 0, KernelCode64Descriptor, KernelDataDescriptor, UserDataDescriptor, UserCode64Descriptor, tssLow, tssHigh];

        a.mov(edi, UserModeGdtAddress);
        for (int i = 0; i < gdt.Length; i++)
        {
            if (gdt[i] == 0) continue;
            a.mov(rax, gdt[i]);
            a.mov(__qword_ptr[rdi + i * 8], rax);
        }
        a.mov(__word_ptr[rdi + DescriptorTableRegisterOffset], gdt.Length * 8 - 1);
        a.mov(__qword_ptr[rdi + DescriptorTableRegisterOffset + 2], rdi);
        a.lgdt(__[rdi + DescriptorTableRegisterOffset]);

        // An exception taken at CPL3 switches to TSS.RSP0. The I/O bitmap is for kvm_pvm, where CPL3 runs with
        // RFLAGS.IOPL 0 however iretq set it (measured: an out at CPL3 raised #GP, its frame showing RFLAGS
        // 0x10046 after an iretq with 0x3002); there CPL3's in and out pass this bitmap instead, so COM1 and the
        // exit port work the same on both kinds of host.
        a.mov(edi, UserModeTssAddress);
        a.mov(eax, KernelStackTop);
        a.mov(__qword_ptr[rdi + 4], rax);
        a.mov(__word_ptr[rdi + 0x66], TssIoBitmapOffset);
        a.mov(__byte_ptr[rdi + TssLimit], 0xff);
        a.mov(ax, TssSelector);
        a.ltr(ax);
    }

    /// <summary>One interrupt gate per exception vector. Each handler's address goes through a small routine
    /// because Iced cannot put a label's address into data.</summary>
    private static void EmitIdt(Assembler a, Label[] faultHandlers, Label writeGate)
    {
        for (int v = 0; v < faultHandlers.Length; v++)
        {
            a.lea(rax, __[faultHandlers[v]]);
            a.mov(edi, UserModeIdtAddress + (uint)v * 16);
            a.call(writeGate);
        }
        a.mov(edi, UserModeIdtAddress);
        a.mov(__word_ptr[rdi + DescriptorTableRegisterOffset], faultHandlers.Length * 16 - 1);
        a.mov(__qword_ptr[rdi + DescriptorTableRegisterOffset + 2], rdi);
        a.lidt(__[rdi + DescriptorTableRegisterOffset]);
    }

    /// <summary>rax = handler, rdi = the gate: 64-bit interrupt gate, present, DPL 0 (exceptions ignore the DPL;
    /// it only keeps CPL3 from raising them with int n), no IST.</summary>
    private static void EmitWriteInterruptGateRoutine(Assembler a, Label writeGate)
    {
        a.Label(ref writeGate);
        a.mov(__word_ptr[rdi], ax);
        a.mov(__word_ptr[rdi + 2], KernelCodeSelector);
        a.mov(__word_ptr[rdi + 4], 0x8e00);
        a.shr(rax, 16);
        a.mov(__word_ptr[rdi + 6], ax);
        a.shr(rax, 16);
        a.mov(__dword_ptr[rdi + 8], eax);
        a.ret();
    }

    /// <summary>Identity-maps the first 4 GiB with 2 MiB pages, every level user-accessible: the U/S bit must be
    /// set at each level for CPL3 to reach a page. No SMEP or SMAP, so CPL0 still reaches them too.</summary>
    private static void EmitUserPageTables(Assembler a)
    {
        const ulong tableFlags = PagePresent | PageWritable | PageUser;
        var nextPage = a.CreateLabel();

        a.mov(edi, UserModePml4Address);
        a.mov(eax, UserModePml4Address + 0x1000 + (uint)tableFlags);
        a.mov(__qword_ptr[rdi], rax);
        for (int gib = 0; gib < UserModeMappedGiB; gib++)
        {
            a.add(eax, 0x1000);
            a.mov(__qword_ptr[rdi + 0x1000 + gib * 8], rax);
        }
        a.add(edi, 0x2000);
        a.mov(eax, (uint)(tableFlags | PageSize2M));
        a.mov(ecx, UserModeMappedGiB * 512);
        a.Label(ref nextPage);
        a.mov(__qword_ptr[rdi], rax);
        a.add(rdi, 8);
        a.add(rax, 1 << 21);
        a.dec(ecx);
        a.jnz(nextPage);
        a.mov(eax, UserModePml4Address);
        a.mov(cr3, rax);
    }

    private static void EmitFaultHandlers(Assembler a, Label[] faultHandlers, Label printHex)
    {
        var report = a.CreateLabel();
        for (int v = 0; v < faultHandlers.Length; v++)
        {
            a.Label(ref faultHandlers[v]);
            a.mov(ebx, v);
            a.jmp(report);
        }
        a.Label(ref report);
        EmitPrint(a, "FAULT ");
        a.mov(eax, ebx);
        a.mov(ecx, 2);
        a.call(printHex);
        EmitPrint(a, "\n");
        EmitExit(a, ExitValueFailure);
    }

    /// <summary>Prints rax as ecx hex digits (1-16, lower case) on COM1. Clobbers rax, rcx, rdx, rsi. Callable
    /// from CPL0 and from CPL3 (IOPL 3, or the TSS's I/O bitmap).</summary>
    private static void EmitPrintHexRoutine(Assembler a, Label printHex)
    {
        var nextDigit = a.CreateLabel();
        var decimalDigit = a.CreateLabel();
        a.Label(ref printHex);
        a.mov(rsi, rax);
        a.lea(ecx, __[rcx * 4 - 4]);
        a.Label(ref nextDigit);
        a.mov(rax, rsi);
        a.shr(rax, cl);
        a.and(eax, 0xf);
        a.cmp(al, 10);
        a.jb(decimalDigit);
        a.add(al, (byte)('a' - '0' - 10));
        a.Label(ref decimalDigit);
        a.add(al, (byte)'0');
        a.mov(dx, SerialPort);
        a.@out(dx, al);
        a.sub(ecx, 4);
        a.jns(nextDigit);
        a.ret();
    }

    /// <summary>Exit-port write from CPL3: after it vmm stops the VM; should the vCPU ever run on, it spins, as hlt
    /// would fault at CPL3.</summary>
    private static void EmitExitFromUserMode(Assembler a, byte value)
    {
        var spin = a.CreateLabel();
        a.mov(al, value);
        a.mov(dx, ExitPort);
        a.@out(dx, al);
        a.Label(ref spin);
        a.pause();
        a.jmp(spin);
    }
}
