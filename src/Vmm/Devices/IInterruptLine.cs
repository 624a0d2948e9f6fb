namespace Vmm.Devices;

/// <summary>An edge-triggered interrupt line into the guest's interrupt controller.</summary>
public interface IInterruptLine
{
    void Trigger();
}
