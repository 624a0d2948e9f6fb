namespace Vmm.Vm;

/// <summary>The nested KVM backend of some build machines (<c>kvm_pvm</c>), which runs guest kernel code
/// in KVM's instruction emulator and shows the guest the host's real CPUID (see
/// docs/nested-kvm.md). Only there does vmm adjust the guest; on hardware KVM it adds nothing.</summary>
public static class NestedKvm
{
    public const string ModulePath = "/sys/module/kvm_pvm";

    /// <summary>Kernel options that keep Linux off the instructions and features the emulator lacks:
    /// XSAVE, SMAP/SMEP, FSGSBASE, INVPCID/PCID, KVM paravirt (served by the outer host, not this KVM),
    /// and, through clearcpuid, the X86_FEATURE bits CX16, SMAP, SMEP, FSGSBASE, INVPCID, PCID, POPCNT,
    /// MOVBE, AES, F16C, RDRAND, FMA, SSE4.1, SSE4.2, SSSE3, PCLMULQDQ, BMI1, BMI2, AVX2, ADX, CLFLUSHOPT,
    /// CLWB, SHA, RDSEED, ABM, RDPID, UMIP, RDTSCP.</summary>
    public const string GuestCommandLineOptions =
        "noxsave nosmap nosmep nofsgsbase noinvpcid nopcid nopv mitigations=off tsc=reliable no_timer_check " +
        "clearcpuid=141,308,295,288,298,145,151,150,153,157,158,140,147,148,137,129,291,296,293,307,311,312,317,306,197,534,514,59";

    /// <summary>The options a booting guest is given here: <see cref="GuestCommandLineOptions"/>, and the frequency of
    /// its TSC (<c>tsc_early_khz</c>, from KVM_GET_TSC_KHZ; nothing when KVM does not know it). Without it the guest
    /// kernel cannot calibrate its TSC here (its PIT loop runs emulated, too slowly to count, and there is no HPET):
    /// it marks the TSC unstable and keeps time by the jiffies of its timer interrupt, which also slows its boot.</summary>
    public static string GuestCommandLineOptionsFor(uint tscKhz) =>
        tscKhz == 0 ? GuestCommandLineOptions : $"{GuestCommandLineOptions} tsc_early_khz={tscKhz}";

    public static bool IsActiveOnThisHost() => Directory.Exists(ModulePath);
}
