namespace Vmm.Devices.Virtio;

/// <summary>Sizes, alignments and field offsets of the three areas of a split virtqueue (virtio 1.2 §2.7,
/// the table "Virtqueue Part / Alignment / Size"). The sizes always include the event-index fields
/// (used_event, avail_event): the spec counts them whether or not VIRTIO_F_EVENT_IDX is negotiated.</summary>
public static class SplitVirtqueueLayout
{
    public const int DescriptorBytes = 16;
    public const int UsedElementBytes = 8;

    public const ulong DescriptorTableAlignment = 16;
    public const ulong AvailableRingAlignment = 2;
    public const ulong UsedRingAlignment = 4;

    /// <summary>struct virtq_avail { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }</summary>
    public const ulong AvailableFlagsOffset = 0;
    public const ulong AvailableIndexOffset = 2;
    public const ulong AvailableRingOffset = 4;

    /// <summary>struct virtq_used { le16 flags; le16 idx; struct virtq_used_elem ring[size]; le16 avail_event; }</summary>
    public const ulong UsedFlagsOffset = 0;
    public const ulong UsedIndexOffset = 2;
    public const ulong UsedRingOffset = 4;

    /// <summary>virtq_avail.flags: the driver asks for no used-buffer notifications (interrupts).</summary>
    public const ushort AvailableFlagNoInterrupt = 1;

    /// <summary>virtq_used.flags: the device asks for no available-buffer notifications (kicks).</summary>
    public const ushort UsedFlagNoNotify = 1;

    public static ulong DescriptorTableBytes(ushort queueSize) => DescriptorBytes * (ulong)queueSize;

    public static ulong AvailableRingBytes(ushort queueSize) => 6 + 2 * (ulong)queueSize;

    public static ulong UsedRingBytes(ushort queueSize) => 6 + UsedElementBytes * (ulong)queueSize;

    public static ulong AvailableRingEntryOffset(ushort queueSize, ushort ringIndex) =>
        AvailableRingOffset + 2 * (ulong)(ringIndex & (queueSize - 1));

    public static ulong UsedRingEntryOffset(ushort queueSize, ushort ringIndex) =>
        UsedRingOffset + UsedElementBytes * (ulong)(ringIndex & (queueSize - 1));

    /// <summary>used_event sits after the available ring's entries.</summary>
    public static ulong UsedEventOffset(ushort queueSize) => AvailableRingOffset + 2 * (ulong)queueSize;

    /// <summary>avail_event sits after the used ring's entries.</summary>
    public static ulong AvailableEventOffset(ushort queueSize) => UsedRingOffset + UsedElementBytes * (ulong)queueSize;
}
