namespace Vmm.Arch;

/// <summary>Where everything lives in the guest's physical address space. One file, named constants,
/// so the loader, the e820 map and the page tables cannot disagree.</summary>
public static class X86Layout
{
    public const ulong GdtAddress = 0x500;
    /// <summary>After the boot GDT's five entries (0x500-0x527); 0x520 would overwrite the TSS descriptor.</summary>
    public const ulong IdtAddress = 0x540;
    public const ulong ZeroPageAddress = 0x7000;
    /// <summary>Initial stack for the 64-bit entry; grows down from just below the page tables.</summary>
    public const ulong BootStackPointer = 0x8ff0;
    public const ulong Pml4Address = 0x9000;
    public const ulong PdptAddress = 0xa000;
    /// <summary>Four page directories of 2 MiB pages, identity-mapping the first 4 GiB.</summary>
    public const ulong PageDirectoriesAddress = 0xb000;
    public const int IdentityMappedGiB = 4;
    public const ulong CommandLineAddress = 0x20000;
    public const int CommandLineMaxBytes = 0x10000;

    /// <summary>The Extended BIOS Data Area: the MP table goes here, and e820 marks it reserved up to 1 MiB.</summary>
    public const ulong EbdaAddress = 0x9fc00;
    public const ulong HighMemoryAddress = 0x100000;

    /// <summary>The 32-bit MMIO hole (IOAPIC, LAPIC, virtio-mmio devices, TSS pages) below 4 GiB.
    /// RAM that does not fit below it continues at 4 GiB.</summary>
    public const ulong MmioHoleAddress = 0xc000_0000;
    public const ulong FourGiB = 0x1_0000_0000;

    /// <summary>Three pages KVM needs for real-mode emulation on Intel (KVM_SET_TSS_ADDR), and the page
    /// after them for the EPT identity map; the same addresses QEMU uses, inside the MMIO hole.</summary>
    public const uint TssAddress = 0xfffb_d000;
    public const ulong IdentityMapAddress = 0xfffb_c000;

    public const ulong IoApicAddress = 0xfec0_0000;
    public const ulong LocalApicAddress = 0xfee0_0000;

    /// <summary>The smallest guest vmm accepts: room for the boot structures and a kernel.</summary>
    public const ulong MinimumMemoryBytes = 16UL << 20;

    /// <summary>The most vCPUs vmm gives a guest: their MP table entries must fit below 1 MiB (<see cref="MpTable.MaxBytes"/>).</summary>
    public const int MaxVcpus = 32;

    /// <summary>Splits guest RAM around the MMIO hole: [0, min(size, hole)) and, for large guests, [4 GiB, ...).</summary>
    public static IReadOnlyList<(ulong GuestAddress, ulong SizeBytes)> RamRanges(ulong memoryBytes)
    {
        if (memoryBytes <= MmioHoleAddress) return [(0, memoryBytes)];
        return [(0, MmioHoleAddress), (FourGiB, memoryBytes - MmioHoleAddress)];
    }
}
