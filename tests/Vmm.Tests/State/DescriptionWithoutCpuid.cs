using Vmm.Serialization;
using Vmm.State;

namespace Vmm.Tests.State;

/// <summary>The machine description as vmm wrote it before the CPUID travelled with the VM (state format
/// versions 1 and 2, migration protocol version 1): it ended after the networks. Kept here as those versions
/// wrote it, so the tests that read it do not follow the current encoding.</summary>
internal static class DescriptionWithoutCpuid
{
    public static void Write(StateWriter w, MachineDescription description)
    {
        w.WriteUInt64(description.MemoryBytes);
        w.WriteUInt32((uint)description.VcpuCount);
        w.WriteUInt32((uint)description.Disks.Count);
        foreach (var disk in description.Disks)
        {
            w.WriteString(disk.Path);
            w.WriteBool(disk.ReadOnly);
            w.WriteOptionalString(disk.Id);
        }
        w.WriteUInt32((uint)description.Networks.Count);
        foreach (var net in description.Networks)
        {
            w.WriteString(net.TapName);
            w.WriteBytes(net.Mac);
        }
    }
}
