using Vmm.Kvm.Interop;

namespace Vmm.Arch;

/// <summary>The MSR values a vCPU starts with: syscall MSRs cleared, fast strings on, and MTRRs enabled
/// with write-back as default type (without it Linux maps all RAM uncached and crawls).</summary>
public static class BootMsrs
{
    public const uint Ia32SysenterCs = 0x174, Ia32SysenterEsp = 0x175, Ia32SysenterEip = 0x176;
    public const uint Star = 0xc000_0081, Lstar = 0xc000_0082, Cstar = 0xc000_0083, SyscallMask = 0xc000_0084;
    public const uint KernelGsBase = 0xc000_0102;
    public const uint Ia32MiscEnable = 0x1a0;
    public const uint MtrrDefType = 0x2ff;

    private const ulong MiscEnableFastString = 1;
    private const ulong MtrrEnable = 1 << 11, MemoryTypeWriteBack = 6;

    public static KvmMsrEntry[] Entries() =>
    [
        new() { Index = Ia32SysenterCs },
        new() { Index = Ia32SysenterEsp },
        new() { Index = Ia32SysenterEip },
        new() { Index = Star },
        new() { Index = Lstar },
        new() { Index = Cstar },
        new() { Index = SyscallMask },
        new() { Index = KernelGsBase },
        new() { Index = Ia32MiscEnable, Data = MiscEnableFastString },
        new() { Index = MtrrDefType, Data = MtrrEnable | MemoryTypeWriteBack },
    ];
}
