using Vmm.Kvm;
using Vmm.Kvm.Interop;
using Vmm.Memory;

namespace Vmm.Arch;

/// <summary>Puts the boot vCPU in the state the Linux boot protocol asks for at the kernel's entry:
/// flat segments from our GDT, the identity map and long mode (or plain 32-bit protected mode),
/// RSI/ESI pointing at the zero page, interrupts off.</summary>
public static class BootCpuState
{
    private const ulong Cr0ProtectionEnable = 1, Cr0Paging = 1UL << 31;
    private const ulong Cr4Pae = 1 << 5;
    private const ulong EferLme = 1 << 8, EferLma = 1 << 10;

    /// <summary>Writes the GDT, an empty IDT and (for long mode) the page tables into guest memory.</summary>
    public static void WriteTables(GuestMemory memory, KernelEntryMode mode)
    {
        var gdt = GdtEntry.BootTable(mode == KernelEntryMode.Long64);
        for (int i = 0; i < gdt.Length; i++) memory.Write(X86Layout.GdtAddress + (ulong)i * 8, gdt[i].Encode());
        memory.Write(X86Layout.IdtAddress, 0UL);
        if (mode == KernelEntryMode.Long64) IdentityPageTables.Write(memory);
    }

    public static void Apply(KvmVcpu vcpu, ulong entryAddress, KernelEntryMode mode, ulong zeroPageAddress)
    {
        bool longMode = mode == KernelEntryMode.Long64;
        var gdt = GdtEntry.BootTable(longMode);

        var sregs = vcpu.GetSregs();
        sregs.Gdt = new KvmDtable { Base = X86Layout.GdtAddress, Limit = (ushort)(gdt.Length * 8 - 1) };
        sregs.Idt = new KvmDtable { Base = X86Layout.IdtAddress, Limit = 7 };
        sregs.Cs = gdt[GdtEntry.CodeSelector / 8].ToKvmSegment(GdtEntry.CodeSelector);
        var data = gdt[GdtEntry.DataSelector / 8].ToKvmSegment(GdtEntry.DataSelector);
        sregs.Ds = sregs.Es = sregs.Fs = sregs.Gs = sregs.Ss = data;
        sregs.Tr = gdt[GdtEntry.TssSelector / 8].ToKvmSegment(GdtEntry.TssSelector);
        sregs.Cr0 = Cr0ProtectionEnable;
        if (longMode)
        {
            sregs.Cr3 = X86Layout.Pml4Address;
            sregs.Cr4 |= Cr4Pae;
            sregs.Cr0 |= Cr0Paging;
            sregs.Efer |= EferLme | EferLma;
        }
        vcpu.SetSregs(sregs);

        vcpu.SetRegs(new KvmRegs
        {
            Rflags = 0x2, // bit 1 is reserved-as-one; IF clear
            Rip = entryAddress,
            Rsp = X86Layout.BootStackPointer,
            Rbp = X86Layout.BootStackPointer,
            Rsi = zeroPageAddress,
        });

        var fpu = new KvmFpu { Fcw = 0x37f, Mxcsr = 0x1f80 };
        vcpu.SetFpu(fpu);
    }

    /// <summary>State every vCPU needs, boot CPU or not: its CPUID, MSRs, LAPIC wiring.</summary>
    public static void ApplyCommon(KvmVcpu vcpu, ReadOnlySpan<KvmCpuidEntry2> cpuid)
    {
        vcpu.SetCpuid(cpuid);
        vcpu.SetMsrs(BootMsrs.Entries());
        LocalApic.ConfigureVirtualWire(vcpu);
    }
}
