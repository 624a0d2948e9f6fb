using Vmm.Serialization;

namespace Vmm.Devices;

/// <summary>What snapshots, live migration and replication ask of every device, so that none of them keeps
/// its own list of devices: the device's state as plain data while the VM is paused, that state loaded into
/// the same device on another machine, and what the device wrote outside guest memory made durable.
/// A device writes guest memory only through <see cref="Memory.GuestMemory.WriteFromDevice(ulong, ReadOnlySpan{byte})"/>
/// or <see cref="Memory.GuestMemory.MarkDirty"/>, which record the pages for dirty tracking (KVM's dirty log
/// only sees the vCPUs' writes).</summary>
public interface IStatefulDevice
{
    /// <summary>Names the device's state in a saved VM: unique in the machine, and the same on a machine built
    /// from the same configuration.</summary>
    string StateName { get; }

    /// <summary>Writes the device's state. The VM is paused: no vCPU and no device work touches the device.</summary>
    void SaveState(StateWriter writer);

    /// <summary>Loads a state <see cref="SaveState"/> wrote, before the VM runs. Anything that does not fit this
    /// device is a <see cref="StateFormatException"/>.</summary>
    void RestoreState(StateReader reader);

    /// <summary>Makes everything the device wrote outside guest memory (a disk image) durable, so another host
    /// or a restored snapshot sees it. The VM is paused.</summary>
    void FlushToStorage() { }
}
