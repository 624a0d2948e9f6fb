namespace Vmm.Vm;

/// <summary>What a device may ask of the VM it lives in. The first stop request wins.</summary>
public interface IVmControl
{
    void RequestStop(VmStop stop);
}
