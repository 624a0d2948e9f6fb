using Vmm.Devices.Virtio;
using Vmm.Memory;

namespace Vmm.Fuzz;

/// <summary>What must hold for any chain the queue hands out, whatever the guest wrote. A violation is
/// a bug in the queue, so it is an exception the harness does not expect.</summary>
public static class ChainInvariants
{
    public static void Check(GuestMemory memory, Virtqueue queue, DescriptorChain chain)
    {
        if (chain.HeadIndex >= queue.Size)
            throw new InvalidOperationException($"chain head {chain.HeadIndex} is outside the {queue.Size}-entry queue");
        long readable = SumInRam(memory, chain.ReadableSpan);
        long writable = SumInRam(memory, chain.WritableSpan);
        if (readable != chain.ReadableBytes || writable != chain.WritableBytes)
            throw new InvalidOperationException($"chain byte counts {chain.ReadableBytes}/{chain.WritableBytes} differ from its segments' {readable}/{writable}");
        if (readable + writable > DescriptorChain.MaxTotalBytes)
            throw new InvalidOperationException($"chain of {readable + writable} bytes passed the 2^32-byte limit");
        if (chain.Readable.Count + chain.Writable.Count > queue.Size + Virtqueue.MaxIndirectEntries)
            throw new InvalidOperationException("chain has more segments than a queue and one indirect table can hold");
    }

    private static long SumInRam(GuestMemory memory, ReadOnlySpan<DescriptorSegment> segments)
    {
        long total = 0;
        foreach (var segment in segments)
        {
            if (!memory.IsRam(segment.Address, segment.Length))
                throw new InvalidOperationException($"segment 0x{segment.Address:x}+0x{segment.Length:x} is not in guest RAM");
            total += segment.Length;
        }
        return total;
    }
}
