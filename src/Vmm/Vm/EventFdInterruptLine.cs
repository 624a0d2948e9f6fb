using Vmm.Devices;
using Vmm.Kvm;

namespace Vmm.Vm;

/// <summary>An interrupt line backed by an irqfd: writing the eventfd makes KVM pulse the GSI in the
/// kernel, with no ioctl and no lock in the VMM.</summary>
public sealed class EventFdInterruptLine(EventFd eventFd) : IInterruptLine
{
    public void Trigger() => eventFd.Signal();
}
