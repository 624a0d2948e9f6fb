using Vmm.Devices.Virtio;
using Vmm.Memory;
using static Vmm.Devices.Virtio.SplitVirtqueueLayout;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>Plays the guest's virtio driver over a split ring in guest memory: fills descriptors, publishes
/// heads in the available ring, and reads back what the device put in the used ring. The rings sit at the
/// default addresses below unless the constructor is given others (a device with several queues).</summary>
internal sealed class SplitRingDriver
{
    public const ulong DescriptorTableAddress = 0x10000;
    public const ulong AvailableRingAddress = 0x30000;
    public const ulong UsedRingAddress = 0x32000;
    /// <summary>Where tests put buffers and indirect tables: everything from here to the end of RAM.</summary>
    public const ulong DataAddress = 0x48000;

    private readonly GuestMemory _memory;
    private readonly Queue<ushort> _freeDescriptors;

    /// <param name="descriptorOrder">The order in which free descriptor indices are handed out (default
    /// 0, 1, 2, ...), so a test can scatter a chain over the table.</param>
    public SplitRingDriver(GuestMemory memory, ushort size, IEnumerable<ushort>? descriptorOrder = null,
        ulong descriptorTable = DescriptorTableAddress, ulong availableRing = AvailableRingAddress, ulong usedRing = UsedRingAddress)
    {
        _memory = memory;
        Size = size;
        _freeDescriptors = new Queue<ushort>(descriptorOrder ?? Enumerable.Range(0, size).Select(i => (ushort)i));
        DescriptorTable = descriptorTable;
        AvailableRing = availableRing;
        UsedRing = usedRing;
    }

    public ushort Size { get; }

    public ulong DescriptorTable { get; }

    public ulong AvailableRing { get; }

    public ulong UsedRing { get; }

    public ushort AvailableIndex { get; private set; }

    public static GuestMemory OneMiB() => GuestMemory.Allocate([(0, 1UL << 20)]);

    public Virtqueue CreateQueue(bool eventIdx = false, bool indirect = false)
    {
        var queue = new Virtqueue(Virtqueue.MaxQueueSize)
        {
            Size = Size,
            DescriptorTableAddress = DescriptorTable,
            AvailableRingAddress = AvailableRing,
            UsedRingAddress = UsedRing,
            EventIdxEnabled = eventIdx,
            IndirectEnabled = indirect,
        };
        queue.Validate(_memory);
        queue.Ready = true;
        return queue;
    }

    public void WriteDescriptor(ulong tableAddress, uint index, ulong address, uint length, ushort flags, ushort next = 0) =>
        _memory.Write(tableAddress + (ulong)DescriptorBytes * index, new VirtqueueDescriptor(address, length, flags, next));

    public void WriteDescriptor(uint index, ulong address, uint length, ushort flags, ushort next = 0) =>
        WriteDescriptor(DescriptorTable, index, address, length, flags, next);

    /// <summary>Puts the buffers in free descriptors of the queue's table, linked in order, and publishes the head.</summary>
    public ushort AddChain(IReadOnlyList<DriverBuffer> buffers)
    {
        var indices = buffers.Select(_ => _freeDescriptors.Dequeue()).ToArray();
        for (int i = 0; i < buffers.Count; i++)
        {
            bool last = i == buffers.Count - 1;
            ushort flags = (ushort)((buffers[i].DeviceWritable ? VirtqueueDescriptor.FlagWrite : 0) | (last ? 0 : VirtqueueDescriptor.FlagNext));
            WriteDescriptor(indices[i], buffers[i].Address, buffers[i].Length, flags, last ? (ushort)0 : indices[i + 1]);
        }
        Publish(indices[0]);
        return indices[0];
    }

    public ushort AddChain(params DriverBuffer[] buffers) => AddChain((IReadOnlyList<DriverBuffer>)buffers);

    /// <summary>Writes the buffers as an indirect table at <paramref name="tableAddress"/> and publishes one
    /// descriptor pointing at it.</summary>
    public ushort AddIndirectChain(ulong tableAddress, IReadOnlyList<DriverBuffer> buffers)
    {
        for (int i = 0; i < buffers.Count; i++)
        {
            bool last = i == buffers.Count - 1;
            ushort flags = (ushort)((buffers[i].DeviceWritable ? VirtqueueDescriptor.FlagWrite : 0) | (last ? 0 : VirtqueueDescriptor.FlagNext));
            WriteDescriptor(tableAddress, (uint)i, buffers[i].Address, buffers[i].Length, flags, (ushort)(i + 1));
        }
        ushort head = _freeDescriptors.Dequeue();
        WriteDescriptor(head, tableAddress, (uint)(DescriptorBytes * buffers.Count), VirtqueueDescriptor.FlagIndirect);
        Publish(head);
        return head;
    }

    /// <summary>Gives a completed chain's descriptors back to the free list, as the driver does on a used entry.</summary>
    public void Recycle(IEnumerable<ushort> descriptorIndices)
    {
        foreach (ushort index in descriptorIndices) _freeDescriptors.Enqueue(index);
    }

    public void Publish(ushort head)
    {
        _memory.Write(AvailableRing + AvailableRingEntryOffset(Size, AvailableIndex), head);
        SetAvailableIndex((ushort)(AvailableIndex + 1));
    }

    public void SetAvailableIndex(ushort index)
    {
        AvailableIndex = index;
        _memory.Write(AvailableRing + AvailableIndexOffset, index);
    }

    public void SetAvailableFlags(ushort flags) => _memory.Write(AvailableRing + AvailableFlagsOffset, flags);

    public void SetUsedEvent(ushort index) => _memory.Write(AvailableRing + UsedEventOffset(Size), index);

    public ushort UsedIndex => _memory.Read<ushort>(UsedRing + UsedIndexOffset);

    public ushort UsedFlags => _memory.Read<ushort>(UsedRing + UsedFlagsOffset);

    public ushort AvailableEvent => _memory.Read<ushort>(UsedRing + AvailableEventOffset(Size));

    public (uint Id, uint Length) UsedElement(ushort ringIndex)
    {
        ulong address = UsedRing + UsedRingEntryOffset(Size, ringIndex);
        return (_memory.Read<uint>(address), _memory.Read<uint>(address + 4));
    }
}
