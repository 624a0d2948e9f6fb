using Vmm.Devices;
using Vmm.Kvm;

namespace Vmm.Vm;

/// <summary>An ISA interrupt line into KVM's in-kernel PIC and IOAPIC: a trigger is a 0→1→0 pulse,
/// which both see as one edge.</summary>
public sealed class KvmInterruptLine(KvmVm vm, uint gsi) : IInterruptLine
{
    public void Trigger()
    {
        vm.SetIrqLine(gsi, true);
        vm.SetIrqLine(gsi, false);
    }
}
