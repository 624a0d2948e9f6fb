using Vmm.Memory;
using Vmm.State;
using Vmm.Vm;

namespace Vmm.Migration;

/// <summary>A migration received into a machine built for it with zeroed RAM.</summary>
public sealed class MachineDestination(Machine machine) : IMigrationDestination
{
    public Machine Machine => machine;
    public GuestMemory Memory => machine.Memory;
    public void Restore(MachineState state) => MachinePersistence.Restore(machine, state);
    public void Dispose() => machine.Dispose();
}
