namespace Vmm.Arch;

/// <summary>How the vCPU starts the kernel (Documentation/arch/x86/boot.rst, "32-bit/64-bit boot protocol").</summary>
public enum KernelEntryMode
{
    /// <summary>Long mode, paging on with an identity map, RSI = zero page.</summary>
    Long64,
    /// <summary>Flat 32-bit protected mode, paging off, ESI = zero page; for kernels without XLF_KERNEL_64.</summary>
    Protected32,
}
