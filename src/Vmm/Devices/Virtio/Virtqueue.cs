using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using Vmm.Memory;
using static Vmm.Devices.Virtio.SplitVirtqueueLayout;

namespace Vmm.Devices.Virtio;

/// <summary>The device side of one split virtqueue (virtio 1.2 §2.7): pops the descriptor chains the
/// driver makes available, puts completed ones in the used ring, and decides about notifications.
/// Every byte it reads was written by a possibly hostile guest, so each value is read once and checked
/// before use, and every loop is bounded by a size the device fixed; a broken rule is a
/// <see cref="VirtqueueException"/>, never a wild access or a hang.
/// <para>Decided where the spec leaves room: a zero-length descriptor is accepted (nothing forbids it; its
/// address must still be in RAM) and so is a chain of them; a device that needs bytes checks
/// ReadableBytes/WritableBytes. An indirect table may hold more entries than the queue size (Linux sends
/// such tables), up to 65535; its chain is bounded by its own entry count. A segment must lie in one RAM
/// region, even where two regions happen to be adjacent.</para>
/// <para>Not thread-safe: one device thread owns a queue.</para></summary>
public sealed class Virtqueue
{
    public const ushort MaxQueueSize = 32768;

    // The spec sets no size for an indirect table beyond its 16-bit next field; like rust-vmm's
    // virtio-queue we stop at 65535 entries, which also bounds the walk through one table.
    public const int MaxIndirectEntries = 65535;

    private readonly DescriptorChain _chain = new();
    private ushort _size;
    private ulong _descriptorTableAddress;
    private ulong _availableRingAddress;
    private ulong _usedRingAddress;
    private ushort _nextAvailableIndex;
    private ushort _nextUsedIndex;

    // Set by Validate, cleared by anything that moves or resizes the areas: the hot path trusts the
    // layout only while this is true.
    private bool _layoutValid;

    // The last avail idx read from the guest, already checked against the ring size. Chains up to it can
    // be popped without reading (and fencing on) the index again.
    private ushort _availableIndexSeen;

    // Used idx when ShouldNotify last answered; the entries since then are the ones a notification covers.
    private ushort _usedIndexAtLastNotify;

    // After NextUsedIndex is restored, the device cannot know whether the source signalled its last
    // entries; one spurious interrupt is harmless, a missed one hangs the driver.
    private bool _notifyUnconditionally;

    public Virtqueue(ushort maxSize)
    {
        if (maxSize == 0 || maxSize > MaxQueueSize || !BitOperations.IsPow2(maxSize))
            throw new ArgumentOutOfRangeException(nameof(maxSize), maxSize, $"a split virtqueue's size is a power of two up to {MaxQueueSize}");
        MaxSize = maxSize;
        Reset();
    }

    public ushort MaxSize { get; }

    /// <summary>Queue size chosen by the driver (QueueNum); checked by <see cref="Validate"/>.</summary>
    public ushort Size
    {
        get => _size;
        set { _size = value; _layoutValid = false; }
    }

    public bool Ready { get; set; }

    public ulong DescriptorTableAddress
    {
        get => _descriptorTableAddress;
        set { _descriptorTableAddress = value; _layoutValid = false; }
    }

    /// <summary>The driver area.</summary>
    public ulong AvailableRingAddress
    {
        get => _availableRingAddress;
        set { _availableRingAddress = value; _layoutValid = false; }
    }

    /// <summary>The device area.</summary>
    public ulong UsedRingAddress
    {
        get => _usedRingAddress;
        set { _usedRingAddress = value; _layoutValid = false; }
    }

    /// <summary>VIRTIO_F_RING_EVENT_IDX was negotiated: used_event/avail_event replace the flags.</summary>
    public bool EventIdxEnabled { get; set; }

    /// <summary>VIRTIO_F_RING_INDIRECT_DESC was negotiated.</summary>
    public bool IndirectEnabled { get; set; }

    /// <summary>The device's last_avail_idx: the available ring entry it pops next (free-running, wraps at 2^16).</summary>
    public ushort NextAvailableIndex
    {
        get => _nextAvailableIndex;
        set { _nextAvailableIndex = value; _availableIndexSeen = value; }
    }

    /// <summary>The used idx the device publishes next. Setting it (a restore) makes the next
    /// <see cref="ShouldNotify"/> answer true.</summary>
    public ushort NextUsedIndex
    {
        get => _nextUsedIndex;
        set
        {
            _nextUsedIndex = value;
            _usedIndexAtLastNotify = value;
            _notifyUnconditionally = true;
        }
    }

    public VirtqueueState SaveState() => new(_size, Ready, _descriptorTableAddress, _availableRingAddress, _usedRingAddress, _nextAvailableIndex, _nextUsedIndex);

    /// <summary>Takes over a queue saved elsewhere. The layout is checked when the queue is next used
    /// (or by <see cref="Validate"/>), exactly as a layout a driver wrote.</summary>
    public void RestoreState(VirtqueueState state)
    {
        Reset();
        Size = state.Size;
        Ready = state.Ready;
        DescriptorTableAddress = state.DescriptorTableAddress;
        AvailableRingAddress = state.AvailableRingAddress;
        UsedRingAddress = state.UsedRingAddress;
        NextAvailableIndex = state.NextAvailableIndex;
        NextUsedIndex = state.NextUsedIndex;
    }

    /// <summary>Back to the state after construction, as on a device reset.</summary>
    public void Reset()
    {
        Size = MaxSize;
        Ready = false;
        DescriptorTableAddress = 0;
        AvailableRingAddress = 0;
        UsedRingAddress = 0;
        EventIdxEnabled = false;
        IndirectEnabled = false;
        NextAvailableIndex = 0;
        _nextUsedIndex = 0;
        _usedIndexAtLastNotify = 0;
        _notifyUnconditionally = false;
    }

    /// <summary>Checks the size and that each area lies, whole, in one RAM region with the spec's alignment.
    /// The transport calls it when the driver sets QueueReady; the pop and completion paths call it again
    /// after any change to the layout.</summary>
    public void Validate(GuestMemory memory)
    {
        _layoutValid = false;
        if (_size == 0 || _size > MaxSize || !BitOperations.IsPow2(_size))
            throw new VirtqueueException($"queue size {_size} is not a power of two between 1 and {MaxSize}");
        CheckArea(memory, "descriptor table", _descriptorTableAddress, DescriptorTableBytes(_size), DescriptorTableAlignment);
        CheckArea(memory, "available ring", _availableRingAddress, AvailableRingBytes(_size), AvailableRingAlignment);
        CheckArea(memory, "used ring", _usedRingAddress, UsedRingBytes(_size), UsedRingAlignment);
        _layoutValid = true;
    }

    private static void CheckArea(GuestMemory memory, string name, ulong address, ulong lengthBytes, ulong alignment)
    {
        if (address % alignment != 0)
            throw new VirtqueueException($"{name} address 0x{address:x} is not {alignment}-byte aligned");
        if (!memory.IsRam(address, lengthBytes))
            throw new VirtqueueException($"{name} 0x{address:x}+0x{lengthBytes:x} is not inside guest RAM");
    }

    private void EnsureLayoutValid(GuestMemory memory)
    {
        if (!_layoutValid) Validate(memory);
    }

    /// <summary>For the paths that write the device area: after a reset its address is 0, and a late
    /// completion written there would corrupt guest RAM the driver has reused. That is a device bug.</summary>
    private void EnsureReadyAndValid(GuestMemory memory, string action)
    {
        if (!Ready) throw new InvalidOperationException($"cannot {action} on a virtqueue that is not ready (reset since the chain was popped?)");
        EnsureLayoutValid(memory);
    }

    /// <summary>Pops the next available chain; false when the ring is empty or the queue is not ready.
    /// The chain is reused: it is valid until the next TryPopChain. On a <see cref="VirtqueueException"/>
    /// nothing is consumed and the device should stop using this queue.</summary>
    public bool TryPopChain(GuestMemory memory, [MaybeNullWhen(false)] out DescriptorChain chain)
    {
        chain = null;
        if (!Ready) return false;
        EnsureLayoutValid(memory);
        if (_nextAvailableIndex == _availableIndexSeen)
        {
            // Acquire: the ring entries and descriptors the driver wrote before bumping idx are visible to
            // the reads below (§2.7.13.3: the driver's write barrier pairs with this).
            ushort availableIndex = memory.ReadUInt16Acquire(_availableRingAddress + AvailableIndexOffset);
            if ((ushort)(availableIndex - _nextAvailableIndex) > _size)
                throw new VirtqueueException(
                    $"available ring idx {availableIndex} is more than the queue size {_size} ahead of the device's {_nextAvailableIndex}");
            if (availableIndex == _nextAvailableIndex) return false;
            _availableIndexSeen = availableIndex;
        }
        ushort head = memory.Read<ushort>(_availableRingAddress + AvailableRingEntryOffset(_size, _nextAvailableIndex));
        if (head >= _size)
            throw new VirtqueueException(
                $"available ring entry {_nextAvailableIndex} names descriptor {head}, outside the {_size}-entry descriptor table");
        _chain.Start(head);
        WalkChain(memory, _descriptorTableAddress, _size, head, insideIndirectTable: false);
        _nextAvailableIndex++;
        chain = _chain;
        return true;
    }

    /// <summary>Follows a chain through one descriptor table (the queue's, or an indirect one), appending
    /// its buffers. The walk is bounded by the table's entry count: a longer chain must revisit an entry,
    /// which is the loop the spec forbids (§2.7.5.2).</summary>
    private void WalkChain(GuestMemory memory, ulong tableAddress, uint entryCount, uint firstIndex, bool insideIndirectTable)
    {
        string table = insideIndirectTable ? "indirect table" : "descriptor table";
        uint index = firstIndex;
        for (uint walked = 0; ; walked++)
        {
            if (walked == entryCount)
                throw new VirtqueueException(
                    $"descriptor chain with head {_chain.HeadIndex} is longer than its {entryCount}-entry {table} (a loop through next)");
            var descriptor = memory.Read<VirtqueueDescriptor>(tableAddress + DescriptorBytes * (ulong)index);
            if (descriptor.IsIndirect)
            {
                CheckIndirectDescriptor(memory, descriptor, index, insideIndirectTable);
                WalkChain(memory, descriptor.Address, descriptor.Length / DescriptorBytes, 0, insideIndirectTable: true);
                return;
            }
            if (!memory.IsRam(descriptor.Address, descriptor.Length))
                throw new VirtqueueException(
                    $"{table} entry {index} (chain head {_chain.HeadIndex}) points at 0x{descriptor.Address:x}+0x{descriptor.Length:x}, which is not inside one region of guest RAM");
            _chain.Append(new DescriptorSegment(descriptor.Address, descriptor.Length), descriptor.IsDeviceWritable);
            if (!descriptor.HasNext) return;
            if (descriptor.Next >= entryCount)
                throw new VirtqueueException(
                    $"{table} entry {index} (chain head {_chain.HeadIndex}) has next {descriptor.Next}, outside the {entryCount}-entry {table}");
            index = descriptor.Next;
        }
    }

    /// <summary>The rules of §2.7.5.3 for a descriptor that points at an indirect table. Its WRITE flag is
    /// ignored, as §2.7.5.3.2 requires; the table's own entries say which way each buffer goes.</summary>
    private void CheckIndirectDescriptor(GuestMemory memory, VirtqueueDescriptor descriptor, uint index, bool insideIndirectTable)
    {
        uint head = _chain.HeadIndex;
        if (insideIndirectTable)
            throw new VirtqueueException($"indirect table entry {index} (chain head {head}) is itself indirect: nested indirect tables are not allowed");
        if (!IndirectEnabled)
            throw new VirtqueueException($"descriptor {index} (chain head {head}) is indirect, but VIRTIO_F_RING_INDIRECT_DESC was not negotiated");
        if (descriptor.HasNext)
            throw new VirtqueueException($"descriptor {index} (chain head {head}) has both the INDIRECT and NEXT flags");
        if (descriptor.Length == 0 || descriptor.Length % DescriptorBytes != 0 || descriptor.Length / DescriptorBytes > MaxIndirectEntries)
            throw new VirtqueueException(
                $"indirect table length {descriptor.Length} at descriptor {index} (chain head {head}) is not a non-zero multiple of {DescriptorBytes} up to {DescriptorBytes * MaxIndirectEntries}");
        if (!memory.IsRam(descriptor.Address, descriptor.Length))
            throw new VirtqueueException(
                $"indirect table 0x{descriptor.Address:x}+0x{descriptor.Length:x} at descriptor {index} (chain head {head}) is not inside one region of guest RAM");
    }

    /// <summary>Returns a chain to the driver: writes (head, bytes written) into the used ring and then
    /// publishes the new used idx, so the driver never sees the idx before the entry.</summary>
    public void AddUsed(GuestMemory memory, ushort headIndex, uint writtenBytes)
    {
        EnsureReadyAndValid(memory, "complete a chain");
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(headIndex, _size);
        // struct virtq_used_elem { le32 id; le32 len; } as one 8-byte store.
        memory.WriteFromDevice(_usedRingAddress + UsedRingEntryOffset(_size, _nextUsedIndex), headIndex | ((ulong)writtenBytes << 32));
        _nextUsedIndex++;
        memory.WriteUInt16ReleaseFromDevice(_usedRingAddress + UsedIndexOffset, _nextUsedIndex);
    }

    /// <summary>After one or more AddUsed: whether the driver wants a used-buffer notification (an
    /// interrupt) for the entries added since the last call (§2.7.7, §2.7.10).</summary>
    public bool ShouldNotify(GuestMemory memory)
    {
        EnsureReadyAndValid(memory, "decide on a notification");
        ushort previous = _usedIndexAtLastNotify;
        _usedIndexAtLastNotify = _nextUsedIndex;
        if (_notifyUnconditionally)
        {
            _notifyUnconditionally = false;
            return true;
        }
        if (previous == _nextUsedIndex) return false;
        // Full fence: our used idx store must be visible before we read the driver's suppression state,
        // or a driver re-enabling interrupts after reading the old idx would wait forever (store-load order,
        // the virtio_mb() in Linux's vhost and virtio_ring).
        Interlocked.MemoryBarrier();
        if (EventIdxEnabled)
        {
            ushort usedEvent = memory.Read<ushort>(_availableRingAddress + UsedEventOffset(_size));
            return NeedsEvent(usedEvent, _nextUsedIndex, previous);
        }
        ushort flags = memory.Read<ushort>(_availableRingAddress + AvailableFlagsOffset);
        return (flags & AvailableFlagNoInterrupt) == 0;
    }

    /// <summary>vring_need_event() (§2.7.10): whether moving an index from <paramref name="oldIndex"/> to
    /// <paramref name="newIndex"/> crossed <paramref name="eventIndex"/>, in 16-bit wrapping arithmetic.</summary>
    public static bool NeedsEvent(ushort eventIndex, ushort newIndex, ushort oldIndex) =>
        (ushort)(newIndex - eventIndex - 1) < (ushort)(newIndex - oldIndex);

    /// <summary>With EVENT_IDX: writes avail_event = NextAvailableIndex, asking the driver to kick when it
    /// makes the next buffer available. Without EVENT_IDX the field means nothing and is left alone.</summary>
    public void UpdateAvailableEvent(GuestMemory memory)
    {
        EnsureReadyAndValid(memory, "update avail_event");
        if (!EventIdxEnabled) return;
        memory.WriteFromDevice(_usedRingAddress + AvailableEventOffset(_size), _nextAvailableIndex);
    }

    /// <summary>Asks the driver for available-buffer notifications (kicks) again: clears
    /// VRING_USED_F_NO_NOTIFY, or with EVENT_IDX updates avail_event. Returns true when buffers became
    /// available meanwhile, which the device must pop before it waits, or it could wait for a kick the
    /// driver decided it need not send.</summary>
    public bool EnableNotifications(GuestMemory memory)
    {
        EnsureReadyAndValid(memory, "enable notifications");
        if (EventIdxEnabled) UpdateAvailableEvent(memory);
        else memory.WriteFromDevice<ushort>(_usedRingAddress + UsedFlagsOffset, 0);
        // Store-load: the request must be visible before we look at idx again (pairs with the driver's
        // fence between publishing idx and reading our flags/avail_event).
        Interlocked.MemoryBarrier();
        return memory.ReadUInt16Acquire(_availableRingAddress + AvailableIndexOffset) != _nextAvailableIndex;
    }

    /// <summary>Tells the driver it need not kick (VRING_USED_F_NO_NOTIFY) while the device is polling the
    /// ring anyway. With EVENT_IDX the flag is not used (§2.7.10); the device just stops moving avail_event.</summary>
    public void DisableNotifications(GuestMemory memory)
    {
        EnsureReadyAndValid(memory, "disable notifications");
        if (!EventIdxEnabled) memory.WriteFromDevice(_usedRingAddress + UsedFlagsOffset, UsedFlagNoNotify);
    }
}
