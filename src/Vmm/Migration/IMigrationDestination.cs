using Vmm.Memory;
using Vmm.State;

namespace Vmm.Migration;

/// <summary>Where an incoming migration puts the VM: the RAM its pages go into, and where its state is loaded
/// at the end. The real one is a machine built for the description (<see cref="MachineDestination"/>); the
/// fuzzer gives RAM alone.</summary>
public interface IMigrationDestination : IDisposable
{
    GuestMemory Memory { get; }
    void Restore(MachineState state);
}
