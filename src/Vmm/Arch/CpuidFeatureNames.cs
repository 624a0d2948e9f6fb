namespace Vmm.Arch;

/// <summary>Names for the feature bits a refused guest is most likely to miss, so the message says "avx512f"
/// rather than only a leaf and a bit. From Linux's arch/x86/include/asm/cpufeatures.h (the /proc/cpuinfo
/// names), Intel's SDM and AMD's APM for the XSAVE components, and KVM's cpuid.rst for its own leaf.</summary>
internal static class CpuidFeatureNames
{
    private static readonly Dictionary<(uint Function, uint Index, CpuidRegister Register), string?[]> Names = new()
    {
        [(1, 0, CpuidRegister.Ecx)] = Bits("pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 cid sdbg fma cx16 xtpr pdcm - pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave osxsave avx f16c rdrand hypervisor"),
        [(1, 0, CpuidRegister.Edx)] = Bits("fpu vme de pse tsc msr pae mce cx8 apic - sep mtrr pge mca cmov pat pse36 pn clflush - dts acpi mmx fxsr sse sse2 ss ht tm ia64 pbe"),
        [(6, 0, CpuidRegister.Eax)] = Bits("dtherm ida arat - pln - pts hwp hwp_notify hwp_act_window hwp_epp hwp_pkg_req"),
        [(7, 0, CpuidRegister.Ebx)] = Bits("fsgsbase tsc_adjust sgx bmi1 hle avx2 fdp_excptn_only smep bmi2 erms invpcid rtm cqm zero_fcs_fds mpx rdt_a avx512f avx512dq rdseed adx smap avx512ifma - clflushopt clwb intel_pt avx512pf avx512er avx512cd sha_ni avx512bw avx512vl"),
        [(7, 0, CpuidRegister.Ecx)] = Bits("prefetchwt1 avx512vbmi umip pku ospke waitpkg avx512_vbmi2 shstk gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq - la57 - - - - - rdpid kl bus_lock_detect cldemote - movdiri movdir64b enqcmd sgx_lc pks"),
        [(7, 0, CpuidRegister.Edx)] = Bits("- sgx_keys avx512_4vnniw avx512_4fmaps fsrm uintr - - avx512_vp2intersect srbds_ctrl md_clear rtm_always_abort - tsx_force_abort serialize hybrid_cpu tsxldtrk - pconfig arch_lbr ibt - amx_bf16 avx512_fp16 amx_tile amx_int8 spec_ctrl intel_stibp flush_l1d arch_capabilities core_capabilities spec_ctrl_ssbd"),
        [(7, 1, CpuidRegister.Eax)] = Bits("- - - - avx_vnni avx512_bf16 - cmpccxadd arch_perfmon_ext - fzrm fsrs fsrc - - - - fred lkgs wrmsrns - amx_fp16 hreset avx_ifma - - lam"),
        [(0xd, 0, CpuidRegister.Eax)] = XsaveComponents,
        [(0xd, 1, CpuidRegister.Eax)] = Bits("xsaveopt xsavec xgetbv1 xsaves xfd"),
        [(0xd, 1, CpuidRegister.Ecx)] = XsaveComponents,
        [(0x4000_0001, 0, CpuidRegister.Eax)] = Bits("kvmclock nopiodelay mmu_op kvmclock2 async_pf steal_time pv_eoi pv_unhalt - pv_tlb_flush async_pf_vmexit pv_send_ipi poll_control pv_sched_yield async_pf_int msi_ext_dest_id hc_map_gpa_range migration_control - - - - - - kvmclock_stable"),
        [(0x8000_0001, 0, CpuidRegister.Ecx)] = Bits("lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs xop skinit wdt - lwp fma4 tce - nodeid_msr - tbm topoext perfctr_core perfctr_nb - bpext ptsc perfctr_llc mwaitx"),
        [(0x8000_0001, 0, CpuidRegister.Edx)] = Bits("fpu vme de pse tsc msr pae mce cx8 apic - syscall mtrr pge mca cmov pat pse36 - mp nx - mmxext mmx fxsr fxsr_opt pdpe1gb rdtscp - lm 3dnowext 3dnow"),
        [(0x8000_0007, 0, CpuidRegister.Edx)] = Bits("- - - - - - - - invtsc"),
        [(0x8000_0008, 0, CpuidRegister.Ebx)] = Bits("clzero irperf xsaveerptr - rdpru - - - - wbnoinvd - - amd_ibpb - amd_ibrs amd_stibp - amd_stibp_always_on - - - - - amd_ppin amd_ssbd virt_ssbd amd_ssb_no cppc amd_psfd btc_no - brs"),
    };

    /// <summary>XCR0 (leaf 0xd.0) and IA32_XSS (leaf 0xd.1 ECX) name the same state components by bit.</summary>
    private static string?[] XsaveComponents => Bits("xstate:x87 xstate:sse xstate:avx xstate:bndregs xstate:bndcsr xstate:opmask xstate:zmm_hi256 xstate:hi16_zmm xstate:pt xstate:pkru xstate:pasid xstate:cet_u xstate:cet_s xstate:hdc xstate:uintr xstate:lbr xstate:hwp xstate:xtilecfg xstate:xtiledata xstate:apx");

    public static string? Of(CpuidFeatureBit feature) =>
        Names.TryGetValue((feature.Function, feature.Index, feature.Register), out var names) && feature.Bit < names.Length ? names[feature.Bit] : null;

    /// <summary>Names from bit 0 up, "-" for a bit without one.</summary>
    private static string?[] Bits(string names) => names.Split(' ').Select(n => n == "-" ? null : n).ToArray();
}
