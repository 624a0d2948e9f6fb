using Vmm.Serialization;
using Vmm.Vm;

namespace Vmm.State;

/// <summary>Saves a paused <see cref="Machine"/> into a <see cref="MachineState"/> and loads one into a machine
/// built for it (<see cref="MachineBuilder.ForRestore"/>): the vCPUs, the in-kernel platform devices, and every
/// device through <see cref="Devices.IStatefulDevice"/>. RAM is not part of it (snapshots and migrations carry
/// it their own way).</summary>
public static class MachinePersistence
{
    public static MachineState Save(Machine machine)
    {
        if (!machine.IsPaused) throw new VmOperationException("the VM must be paused to save its state");
        return new MachineState
        {
            Description = MachineDescription.Of(machine.Config) with { VcpuCpuid = machine.Vcpus.Select(v => v.GetCpuid()).ToArray() },
            Vcpus = machine.Vcpus.Select(v => VcpuState.Capture(v, machine.StateSupport)).ToArray(),
            Platform = PlatformState.Capture(machine.KvmVm),
            Devices = machine.Devices.Select(device =>
            {
                var w = new StateWriter();
                device.SaveState(w);
                return new DeviceStateSection(device.StateName, w.ToArray());
            }).ToArray(),
        };
    }

    /// <summary>Makes what every device wrote outside guest memory durable (disk images), with the VM paused.</summary>
    public static void FlushDevices(Machine machine)
    {
        foreach (var device in machine.Devices) device.FlushToStorage();
    }

    /// <summary>Loads <paramref name="state"/> into a machine built for it, before it runs. Queues that may have
    /// had work waiting are kicked once, so requests the source had not yet seen are served.</summary>
    public static void Restore(Machine machine, MachineState state)
    {
        if (!state.Description.SameAs(MachineDescription.Of(machine.Config)))
            throw new StateFormatException("the saved state describes a different machine (memory, vCPUs or devices) than the one built for it");
        var sections = state.Devices.ToDictionary(d => d.Name);
        foreach (var device in machine.Devices)
        {
            if (!sections.Remove(device.StateName, out var section))
                throw new StateFormatException($"the saved state has nothing for device \"{device.StateName}\"");
            var reader = new StateReader(section.State);
            device.RestoreState(reader);
            reader.ExpectEnd($"state of device \"{device.StateName}\"");
        }
        if (sections.Count > 0)
            throw new StateFormatException($"the saved state has devices this machine lacks: {string.Join(", ", sections.Keys.Select(k => $"\"{k}\""))}");
        state.Platform.Restore(machine.KvmVm);
        for (int i = 0; i < machine.Vcpus.Count; i++) state.Vcpus[i].Restore(machine.Vcpus[i], machine.StateSupport);
        machine.AfterRestore();
    }
}
