using Vmm.Kvm.Interop;

namespace Vmm.Arch;

/// <summary>Turns KVM_GET_SUPPORTED_CPUID's table into what one vCPU of an N-vCPU guest should see:
/// its own APIC ID, a consistent topology (one socket, one thread per core) and the hypervisor bit.</summary>
public static class CpuidPolicy
{
    private const uint HypervisorBit = 1u << 31; // leaf 1 ECX
    private const uint HttBit = 1u << 28;         // leaf 1 EDX

    public static KvmCpuidEntry2[] ForVcpu(ReadOnlySpan<KvmCpuidEntry2> supported, int vcpuIndex, int vcpuCount)
    {
        var entries = supported.ToArray();
        int coreBits = vcpuCount <= 1 ? 0 : 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)vcpuCount - 1);
        for (int i = 0; i < entries.Length; i++)
        {
            ref var e = ref entries[i];
            switch (e.Function)
            {
                case 1:
                    // EBX: APIC ID in 31:24, logical processors per package in 23:16, CLFLUSH size kept.
                    e.Ebx = (e.Ebx & 0x0000_ffff) | ((uint)vcpuIndex << 24) | ((uint)vcpuCount << 16);
                    e.Ecx |= HypervisorBit;
                    if (vcpuCount > 1) e.Edx |= HttBit; else e.Edx &= ~HttBit;
                    break;
                case 4:
                    // Deterministic cache parameters: cores per package - 1 in 31:26; threads sharing the cache
                    // (one for L1/L2, all cores for L3) in 25:14.
                    uint cacheLevel = (e.Eax >> 5) & 7;
                    uint sharing = cacheLevel >= 3 ? (uint)vcpuCount - 1 : 0;
                    e.Eax = (e.Eax & 0x3fff) | (((uint)vcpuCount - 1) << 26) | (sharing << 14);
                    break;
                case 0xb:
                case 0x1f:
                    // Extended topology: level 0 = SMT (1 thread), level 1 = core (all vCPUs), x2APIC ID in EDX.
                    e.Edx = (uint)vcpuIndex;
                    if (e.Index == 0) { e.Eax = 0; e.Ebx = 1; e.Ecx = 1u << 8; }
                    else if (e.Index == 1) { e.Eax = (uint)coreBits; e.Ebx = (uint)vcpuCount; e.Ecx = 1 | (2u << 8); }
                    else { e.Eax = 0; e.Ebx = 0; e.Ecx = e.Index; }
                    break;
            }
        }
        return entries;
    }
}
