using Vmm.Memory;
using static Vmm.Devices.Virtio.SplitVirtqueueLayout;

namespace Vmm.Bench;

/// <summary>Writes split-ring descriptors (struct virtq_desc) the way a driver would.</summary>
public static class DescriptorTableWriter
{
    public const ushort FlagNext = 1, FlagWrite = 2, FlagIndirect = 4;

    public static void Write(GuestMemory memory, ulong table, int index, ulong address, uint length, ushort flags, ushort next)
    {
        ulong entry = table + (ulong)DescriptorBytes * (ulong)index;
        memory.Write(entry, address);
        memory.Write(entry + 8, length);
        memory.Write(entry + 12, flags);
        memory.Write(entry + 14, next);
    }
}
