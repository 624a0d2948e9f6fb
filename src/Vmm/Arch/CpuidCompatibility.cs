using System.Text;
using Vmm.Kvm.Interop;

namespace Vmm.Arch;

/// <summary>Whether a guest that was shown one CPUID can go on running on a vCPU offered another (a migration
/// target's or a restoring host's KVM). A guest probes its CPU once, at boot, and then uses what it found: a
/// feature it was shown and loses faults or corrupts it later. So every feature bit the guest was shown must be
/// offered, as Cloud Hypervisor and QEMU's "check"/"enforce" CPU models also demand; extra features on offer are
/// fine, the guest never looks again.
/// <para>Feature registers (every bit one feature, by the SDM and APM): leaf 1 ECX and EDX, leaf 6 EAX, leaf 7
/// subleaf 0 EBX/ECX/EDX and subleaf 1 EAX-EDX and subleaf 2 EDX, leaf 0xd subleaf 0 EAX/EDX (the XCR0 state
/// components) and subleaf 1 EAX (XSAVEOPT, XSAVES, ...) and ECX/EDX (the IA32_XSS components), leaf 0x14 EBX/ECX
/// (processor trace), leaf 0x19 EBX (key locker), KVM's leaf 0x40000001 EAX (kvmclock, PV EOI, ...), and leaves
/// 0x80000001 ECX/EDX, 0x80000007 EDX (invariant TSC), 0x80000008 EBX and 0x80000021 EAX.</para>
/// <para>Not compared: the bits vmm sets itself (hypervisor, HTT), the bits KVM keeps in step with the guest's own
/// control registers (OSXSAVE with CR4.OSXSAVE, OSPKE with CR4.PKE), and everything that describes rather than
/// offers: family, model and stepping (a guest reads them for errata, and hosts of one pool differ in them),
/// cache and TLB descriptors, topology and APIC IDs, XSAVE sizes and offsets, the brand string. Two values are
/// not bits: the vendor must be the same (Intel and AMD guests take different paths for the same feature, and
/// Linux reads the vendor once), and the physical address width must not shrink (the guest may use an address
/// the new host cannot map).</para></summary>
public static class CpuidCompatibility
{
    /// <summary>KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the entry is for one subleaf; without it, for every subleaf.</summary>
    private const uint SignificantIndex = 1;
    private const uint Hypervisor = 1u << 31, OsXsave = 1u << 27, Htt = 1u << 28, OsPke = 1u << 4;
    private const int MaxFeaturesNamed = 16;

    private static readonly (uint Function, uint Index, CpuidRegister Register, uint NotCompared)[] FeatureRegisters =
    [
        (1, 0, CpuidRegister.Ecx, Hypervisor | OsXsave),
        (1, 0, CpuidRegister.Edx, Htt),
        (6, 0, CpuidRegister.Eax, 0),
        (7, 0, CpuidRegister.Ebx, 0), (7, 0, CpuidRegister.Ecx, OsPke), (7, 0, CpuidRegister.Edx, 0),
        (7, 1, CpuidRegister.Eax, 0), (7, 1, CpuidRegister.Ebx, 0), (7, 1, CpuidRegister.Ecx, 0), (7, 1, CpuidRegister.Edx, 0),
        (7, 2, CpuidRegister.Edx, 0),
        (0xd, 0, CpuidRegister.Eax, 0), (0xd, 0, CpuidRegister.Edx, 0),
        (0xd, 1, CpuidRegister.Eax, 0), (0xd, 1, CpuidRegister.Ecx, 0), (0xd, 1, CpuidRegister.Edx, 0),
        (0x14, 0, CpuidRegister.Ebx, 0), (0x14, 0, CpuidRegister.Ecx, 0),
        (0x19, 0, CpuidRegister.Ebx, 0),
        (0x4000_0001, 0, CpuidRegister.Eax, 0),
        (0x8000_0001, 0, CpuidRegister.Ecx, 0), (0x8000_0001, 0, CpuidRegister.Edx, 0),
        (0x8000_0007, 0, CpuidRegister.Edx, 0),
        (0x8000_0008, 0, CpuidRegister.Ebx, 0),
        (0x8000_0021, 0, CpuidRegister.Eax, 0),
    ];

    /// <summary>The feature bits set in <paramref name="shown"/> and clear in <paramref name="offered"/>. A leaf
    /// either table lacks counts as all zeros.</summary>
    public static IReadOnlyList<CpuidFeatureBit> MissingFeatures(ReadOnlySpan<KvmCpuidEntry2> shown, ReadOnlySpan<KvmCpuidEntry2> offered)
    {
        var missing = new List<CpuidFeatureBit>();
        foreach (var (function, index, register, notCompared) in FeatureRegisters)
        {
            uint lacking = Read(shown, function, index, register) & ~Read(offered, function, index, register) & ~notCompared;
            for (int bit = 0; bit < 32; bit++)
                if ((lacking & (1u << bit)) != 0) missing.Add(new CpuidFeatureBit(function, index, register, bit));
        }
        return missing;
    }

    /// <summary>Why a guest shown <paramref name="shown"/> cannot run on a vCPU offered <paramref name="offered"/>,
    /// as a user reads it; null when it can.</summary>
    public static string? Refusal(ReadOnlySpan<KvmCpuidEntry2> shown, ReadOnlySpan<KvmCpuidEntry2> offered)
    {
        var reasons = new List<string>();
        string shownVendor = Vendor(shown), offeredVendor = Vendor(offered);
        if (shownVendor != offeredVendor) reasons.Add($"a {shownVendor} CPU (this host's is {offeredVendor})");
        uint shownAddressBits = PhysicalAddressBits(shown), offeredAddressBits = PhysicalAddressBits(offered);
        if (shownAddressBits > offeredAddressBits) reasons.Add($"{shownAddressBits}-bit physical addresses (this host offers {offeredAddressBits})");
        var missing = MissingFeatures(shown, offered);
        reasons.AddRange(missing.Take(MaxFeaturesNamed).Select(f => f.ToString()));
        if (missing.Count > MaxFeaturesNamed) reasons.Add($"{missing.Count - MaxFeaturesNamed} more features");
        return reasons.Count == 0 ? null : string.Join(", ", reasons);
    }

    /// <summary>The entry KVM would answer CPUID(function, index) from: the first one for that leaf that is for
    /// every subleaf or for this one (as kvm_find_cpuid_entry2 picks).</summary>
    private static KvmCpuidEntry2? Find(ReadOnlySpan<KvmCpuidEntry2> entries, uint function, uint index)
    {
        foreach (var e in entries)
            if (e.Function == function && ((e.Flags & SignificantIndex) == 0 || e.Index == index)) return e;
        return null;
    }

    private static uint Read(ReadOnlySpan<KvmCpuidEntry2> entries, uint function, uint index, CpuidRegister register) =>
        Find(entries, function, index) is not { } e ? 0 : register switch
        {
            CpuidRegister.Eax => e.Eax,
            CpuidRegister.Ebx => e.Ebx,
            CpuidRegister.Ecx => e.Ecx,
            _ => e.Edx,
        };

    /// <summary>Leaf 0: the vendor's 12 characters in EBX, EDX, ECX; any byte that is not printable shows as '?'.</summary>
    private static string Vendor(ReadOnlySpan<KvmCpuidEntry2> entries)
    {
        if (Find(entries, 0, 0) is not { } leaf0) return "nameless";
        var text = new StringBuilder(12);
        foreach (uint word in (ReadOnlySpan<uint>)[leaf0.Ebx, leaf0.Edx, leaf0.Ecx])
            for (int shift = 0; shift < 32; shift += 8)
            {
                char c = (char)((word >> shift) & 0xff);
                text.Append(c is >= ' ' and <= '~' ? c : '?');
            }
        return text.ToString();
    }

    /// <summary>Leaf 0x80000008 EAX bits 7:0.</summary>
    private static uint PhysicalAddressBits(ReadOnlySpan<KvmCpuidEntry2> entries) => Read(entries, 0x8000_0008, 0, CpuidRegister.Eax) & 0xff;
}
