using Vmm.Arch;
using Vmm.Kvm;
using Xunit;

namespace Vmm.Tests.Kvm;

/// <summary>KVM_GET_CPUID2 on a real vCPU: it hands back the table KVM_SET_CPUID2 gave it, entry for entry
/// (the values of some leaves are KVM's to adjust: kvm_pvm reports the hardware's leaves 1 and 7).</summary>
public sealed class KvmVcpuCpuidTests
{
    [Fact]
    public void GetCpuid_ReturnsTheEntriesSet_EvenWhenMoreThanItsFirstBufferHolds()
    {
        using var kvm = KvmSystem.Open();
        using var vm = kvm.CreateVm();
        using var vcpu = vm.CreateVcpu(0);
        // Padded past the 64 entries of the first try, so the E2BIG retry is taken on any host.
        var set = CpuidPolicy.ForVcpu(kvm.GetSupportedCpuid(), 0, 1).Concat(Enumerable.Range(0, 70).Select(i =>
            new Vmm.Kvm.Interop.KvmCpuidEntry2 { Function = 0x4000_0100u + (uint)i, Eax = (uint)i + 1 })).ToArray();
        vcpu.SetCpuid(set);

        var read = vcpu.GetCpuid();

        Assert.Equal(set.Select(e => (e.Function, e.Index)), read.Select(e => (e.Function, e.Index)));
        Assert.Equal(set[^1].Eax, read[^1].Eax);
    }
}
