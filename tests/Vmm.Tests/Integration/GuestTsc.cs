using Vmm.Kvm;

namespace Vmm.Tests.Integration;

/// <summary>The guest TSC frequency KVM gives a new vCPU on this host, for guests that time themselves with rdtsc.</summary>
internal static class GuestTsc
{
    private static readonly Lazy<uint> s_khz = new(Read);

    public static uint Khz => s_khz.Value;

    private static uint Read()
    {
        using var kvm = KvmSystem.Open();
        using var vm = kvm.CreateVm();
        using var vcpu = vm.CreateVcpu(0);
        return vcpu.GetTscKhz();
    }
}
