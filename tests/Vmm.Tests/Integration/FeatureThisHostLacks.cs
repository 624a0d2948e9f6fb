using Vmm.Arch;
using Vmm.Kvm;
using Vmm.Kvm.Interop;

namespace Vmm.Tests.Integration;

/// <summary>A CPU feature this host's KVM cannot offer, found at run time, so a test can show a guest a CPU that
/// no target on this host can give it: the mismatch of two different hosts, on one.</summary>
internal static class FeatureThisHostLacks
{
    // Instruction sets no current CPU has all of: AMD's dropped XOP/FMA4/TBM (never on Intel), Xeon Phi's AVX-512 parts.
    private static readonly CpuidFeatureBit[] Candidates =
    [
        new(0x8000_0001, 0, CpuidRegister.Ecx, 11), new(0x8000_0001, 0, CpuidRegister.Ecx, 16), new(0x8000_0001, 0, CpuidRegister.Ecx, 21),
        new(7, 0, CpuidRegister.Ebx, 27), new(7, 0, CpuidRegister.Ebx, 26), new(7, 0, CpuidRegister.Edx, 2),
    ];

    private static readonly Lazy<CpuidFeatureBit> s_feature = new(Find);

    public static CpuidFeatureBit Feature => s_feature.Value;

    /// <summary>Shows the feature in <paramref name="table"/> (for <see cref="Vm.MachineConfig.AdjustCpuidForTests"/>).</summary>
    public static void ShowIn(KvmCpuidEntry2[] table) => ShowIn(table, Feature);

    /// <summary>What this host's KVM shows a vCPU given everything it supports (what a restore is checked against).</summary>
    public static KvmCpuidEntry2[] Offered()
    {
        using var kvm = KvmSystem.Open();
        using var vm = kvm.CreateVm();
        using var vcpu = vm.CreateVcpu(0);
        vcpu.SetCpuid(kvm.GetSupportedCpuid());
        return vcpu.GetCpuid();
    }

    private static CpuidFeatureBit Find()
    {
        var offered = Offered();
        foreach (var candidate in Candidates)
        {
            // Only a leaf KVM reports can carry the bit; kvm_pvm shows the hardware's leaf 7 whatever is set.
            if (!offered.Any(e => e.Function == candidate.Function && e.Index == candidate.Index)) continue;
            var shown = offered.ToArray();
            ShowIn(shown, candidate);
            if (CpuidCompatibility.MissingFeatures(shown, offered).Contains(candidate)) return candidate;
        }
        throw new InvalidOperationException("this host's KVM offers every candidate feature: add one it lacks");
    }

    private static void ShowIn(KvmCpuidEntry2[] table, CpuidFeatureBit f)
    {
        foreach (ref var e in table.AsSpan())
            if (e.Function == f.Function && e.Index == f.Index) e = Set(e, f);
    }

    private static KvmCpuidEntry2 Set(KvmCpuidEntry2 e, CpuidFeatureBit f)
    {
        uint bit = 1u << f.Bit;
        return f.Register switch
        {
            CpuidRegister.Eax => e with { Eax = e.Eax | bit },
            CpuidRegister.Ebx => e with { Ebx = e.Ebx | bit },
            CpuidRegister.Ecx => e with { Ecx = e.Ecx | bit },
            _ => e with { Edx = e.Edx | bit },
        };
    }
}
