using Vmm.Devices.Virtio;
using Vmm.Memory;
using Xunit;
using static Vmm.Tests.Devices.Virtio.SplitRingDriver;

namespace Vmm.Tests.Devices.Virtio;

public sealed class VirtqueueTests
{
    private static DriverBuffer In(ulong address, uint length) => new(address, length, DeviceWritable: false);
    private static DriverBuffer Out(ulong address, uint length) => new(address, length, DeviceWritable: true);

    [Fact]
    public void TryPopChain_EmptyRing_ReturnsFalse()
    {
        using var memory = OneMiB();
        var queue = new SplitRingDriver(memory, 16).CreateQueue();
        Assert.False(queue.TryPopChain(memory, out var chain));
        Assert.Null(chain);
        Assert.Equal(0, queue.NextAvailableIndex);
    }

    [Fact]
    public void TryPopChain_QueueNotReady_ReturnsFalseWithoutReadingTheRing()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 16);
        var queue = driver.CreateQueue();
        driver.AddChain(In(DataAddress, 64));
        queue.Ready = false;
        Assert.False(queue.TryPopChain(memory, out _));
        Assert.Equal(0, queue.NextAvailableIndex);
    }

    [Fact]
    public void TryPopChain_ReadableThenWritableChain_SplitsSegmentsInOrder()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 16);
        var queue = driver.CreateQueue();
        ushort head = driver.AddChain(In(DataAddress, 16), In(DataAddress + 0x100, 512), Out(DataAddress + 0x1000, 4096), Out(DataAddress + 0x3000, 1));

        Assert.True(queue.TryPopChain(memory, out var chain));
        Assert.Equal(head, chain.HeadIndex);
        Assert.Equal([new DescriptorSegment(DataAddress, 16), new DescriptorSegment(DataAddress + 0x100, 512)], chain.Readable);
        Assert.Equal([new DescriptorSegment(DataAddress + 0x1000, 4096), new DescriptorSegment(DataAddress + 0x3000, 1)], chain.Writable);
        Assert.Equal(528, chain.ReadableBytes);
        Assert.Equal(4097, chain.WritableBytes);
        Assert.Equal(1, queue.NextAvailableIndex);
        Assert.False(queue.TryPopChain(memory, out _));
    }

    [Fact]
    public void TryPopChain_ChainScatteredOverTheTable_FollowsNext()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8, descriptorOrder: [5, 2, 7, 0]);
        var queue = driver.CreateQueue();
        ushort head = driver.AddChain(In(DataAddress, 1), In(DataAddress + 1, 2), Out(DataAddress + 3, 3), Out(DataAddress + 6, 4));

        Assert.Equal(5, head);
        Assert.True(queue.TryPopChain(memory, out var chain));
        Assert.Equal([1u, 2u], chain.Readable.Select(s => s.Length));
        Assert.Equal([3u, 4u], chain.Writable.Select(s => s.Length));
    }

    [Fact]
    public void TryPopChain_OnlyWritableBuffers_AreAllWritable()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        driver.AddChain(Out(DataAddress, 1500), Out(DataAddress + 2048, 1500));
        Assert.True(queue.TryPopChain(memory, out var chain));
        Assert.Empty(chain.Readable);
        Assert.Equal(3000, chain.WritableBytes);
    }

    [Fact]
    public void TryPopChain_ZeroLengthDescriptors_AreAcceptedAsEmptySegments()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        driver.AddChain(In(DataAddress, 0), Out(DataAddress, 0));
        Assert.True(queue.TryPopChain(memory, out var chain));
        Assert.Equal([new DescriptorSegment(DataAddress, 0)], chain.Readable);
        Assert.Equal([new DescriptorSegment(DataAddress, 0)], chain.Writable);
        Assert.Equal(0, chain.ReadableBytes + chain.WritableBytes);
    }

    [Fact]
    public void TryPopChain_RestoredNextAvailableIndex_ContinuesFromThere()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue();
        for (uint i = 0; i < 4; i++) driver.AddChain(In(DataAddress + i * 0x100, 10 + i));

        queue.NextAvailableIndex = 2;
        Assert.True(queue.TryPopChain(memory, out var chain));
        Assert.Equal(12u, chain.Readable[0].Length);
        Assert.True(queue.TryPopChain(memory, out chain));
        Assert.Equal(13u, chain.Readable[0].Length);
        Assert.False(queue.TryPopChain(memory, out _));
    }

    [Fact]
    public void TryPopChain_IndirectTable_ReturnsItsBuffers()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(indirect: true);
        ulong table = DataAddress + 0x10000;
        ushort head = driver.AddIndirectChain(table, [In(DataAddress, 16), Out(DataAddress + 0x1000, 4096), Out(DataAddress + 0x2000, 1)]);

        Assert.True(queue.TryPopChain(memory, out var chain));
        Assert.Equal(head, chain.HeadIndex);
        Assert.Equal([new DescriptorSegment(DataAddress, 16)], chain.Readable);
        Assert.Equal([new DescriptorSegment(DataAddress + 0x1000, 4096), new DescriptorSegment(DataAddress + 0x2000, 1)], chain.Writable);
    }

    [Fact]
    public void TryPopChain_IndirectTableLongerThanTheQueue_IsAccepted()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 2);
        var queue = driver.CreateQueue(indirect: true);
        var buffers = Enumerable.Range(0, 100).Select(i => In(DataAddress + (ulong)i * 8, 8)).ToArray();
        driver.AddIndirectChain(DataAddress + 0x10000, buffers);

        Assert.True(queue.TryPopChain(memory, out var chain));
        Assert.Equal(100, chain.Readable.Count);
        Assert.Equal(800, chain.ReadableBytes);
    }

    [Fact]
    public void TryPopChain_DirectDescriptorsThenIndirectTable_JoinsBothInOrder()
    {
        // §2.7.5.3.2: "zero or more normal chained descriptors followed by a single descriptor with
        // flags&VIRTQ_DESC_F_INDIRECT" is valid and the device must handle it.
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue(indirect: true);
        ulong table = DataAddress + 0x10000;
        driver.WriteDescriptor(table, 0, DataAddress + 0x100, 32, VirtqueueDescriptor.FlagNext, 1);
        driver.WriteDescriptor(table, 1, DataAddress + 0x200, 64, VirtqueueDescriptor.FlagWrite);
        driver.WriteDescriptor(3, DataAddress, 16, VirtqueueDescriptor.FlagNext, 6);
        // The WRITE flag on the descriptor that points at a table is ignored (§2.7.5.3.2).
        driver.WriteDescriptor(6, table, 32, VirtqueueDescriptor.FlagIndirect | VirtqueueDescriptor.FlagWrite);
        driver.Publish(3);

        Assert.True(queue.TryPopChain(memory, out var chain));
        Assert.Equal([new DescriptorSegment(DataAddress, 16), new DescriptorSegment(DataAddress + 0x100, 32)], chain.Readable);
        Assert.Equal([new DescriptorSegment(DataAddress + 0x200, 64)], chain.Writable);
    }

    [Fact]
    public void TryPopChain_ChainAsLongAsTheQueue_IsAccepted()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue();
        driver.AddChain(Enumerable.Range(0, 8).Select(i => In(DataAddress + (ulong)i, 1)).ToArray());
        Assert.True(queue.TryPopChain(memory, out var chain));
        Assert.Equal(8, chain.Readable.Count);
    }

    [Fact]
    public void AddUsed_WritesTheElementAndPublishesTheIndex()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        ushort head = driver.AddChain(In(DataAddress, 16), Out(DataAddress + 0x100, 512));
        Assert.True(queue.TryPopChain(memory, out var chain));

        queue.AddUsed(memory, chain.HeadIndex, 300);

        Assert.Equal(1, driver.UsedIndex);
        Assert.Equal((head, 300u), driver.UsedElement(0));
        Assert.Equal(1, queue.NextUsedIndex);
    }

    [Fact]
    public void AddUsed_OutOfOrderCompletions_LandInCompletionOrder()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        ushort first = driver.AddChain(Out(DataAddress, 1));
        ushort second = driver.AddChain(Out(DataAddress + 1, 1));

        queue.AddUsed(memory, second, 1);
        queue.AddUsed(memory, first, 0);

        Assert.Equal(2, driver.UsedIndex);
        Assert.Equal((second, 1u), driver.UsedElement(0));
        Assert.Equal((first, 0u), driver.UsedElement(1));
    }

    [Fact]
    public void AddUsed_MarksTheUsedRingPagesDirty()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 1024);
        var queue = driver.CreateQueue();
        memory.TakeDeviceDirtyBitmap(memory.Regions[0]);
        // Entry 600 of the used ring is on the ring's second page; idx is on its first.
        queue.NextUsedIndex = 600;
        queue.AddUsed(memory, 7, 0);

        ulong[] dirty = memory.TakeDeviceDirtyBitmap(memory.Regions[0]);
        ulong elementPage = (UsedRingAddress + 4 + 8 * 600) / 4096;
        ulong indexPage = UsedRingAddress / 4096;
        Assert.NotEqual(elementPage, indexPage);
        Assert.Equal([indexPage, elementPage], DirtyPages(dirty));
    }

    [Fact]
    public void AddUsed_HeadOutsideTheQueue_IsADeviceBug()
    {
        using var memory = OneMiB();
        var queue = new SplitRingDriver(memory, 4).CreateQueue();
        Assert.Throws<ArgumentOutOfRangeException>(() => queue.AddUsed(memory, 4, 0));
    }

    [Fact]
    public void AddUsed_AfterReset_RefusesToWriteGuestMemory()
    {
        using var memory = OneMiB();
        var queue = new SplitRingDriver(memory, 4).CreateQueue();
        queue.Reset();
        memory.TakeDeviceDirtyBitmap(memory.Regions[0]);
        Assert.Throws<InvalidOperationException>(() => queue.AddUsed(memory, 0, 0));
        Assert.Empty(DirtyPages(memory.TakeDeviceDirtyBitmap(memory.Regions[0])));
    }

    [Fact]
    public void Indexes_WrapAround16BitsAfter65536Chains()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        const int chains = 65536 + 1000;
        for (int i = 0; i < chains; i++)
        {
            ushort head = driver.AddChain(In(DataAddress + (ulong)(i % 4096), (uint)(i % 97)));
            Assert.True(queue.TryPopChain(memory, out var chain));
            Assert.Equal(head, chain.HeadIndex);
            Assert.Equal((uint)(i % 97), chain.Readable[0].Length);
            queue.AddUsed(memory, chain.HeadIndex, (uint)i);
            Assert.Equal((head, (uint)i), driver.UsedElement((ushort)i));
            driver.Recycle([head]);
        }
        Assert.Equal(chains % 65536, (int)queue.NextAvailableIndex);
        Assert.Equal(chains % 65536, (int)queue.NextUsedIndex);
        Assert.Equal(chains % 65536, (int)driver.UsedIndex);
        Assert.False(queue.TryPopChain(memory, out _));
    }

    [Fact]
    public void ShouldNotify_WithoutEventIdx_FollowsTheNoInterruptFlag()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();

        queue.AddUsed(memory, 0, 0);
        Assert.True(queue.ShouldNotify(memory));

        driver.SetAvailableFlags(SplitVirtqueueLayout.AvailableFlagNoInterrupt);
        queue.AddUsed(memory, 1, 0);
        Assert.False(queue.ShouldNotify(memory));

        driver.SetAvailableFlags(0);
        queue.AddUsed(memory, 2, 0);
        Assert.True(queue.ShouldNotify(memory));
    }

    [Fact]
    public void ShouldNotify_NothingUsedSinceTheLastAnswer_IsFalse()
    {
        using var memory = OneMiB();
        var queue = new SplitRingDriver(memory, 4).CreateQueue();
        Assert.False(queue.ShouldNotify(memory));
        queue.AddUsed(memory, 0, 0);
        Assert.True(queue.ShouldNotify(memory));
        Assert.False(queue.ShouldNotify(memory));
    }

    [Fact]
    public void ShouldNotify_WithEventIdx_NotifiesWhenUsedIdxCrossesUsedEvent()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue(eventIdx: true);
        // The driver asks for an interrupt once entry 2 is used (used idx passes 2 -> 3).
        driver.SetUsedEvent(2);
        // The NO_INTERRUPT flag means nothing with EVENT_IDX.
        driver.SetAvailableFlags(SplitVirtqueueLayout.AvailableFlagNoInterrupt);

        queue.AddUsed(memory, 0, 0);
        Assert.False(queue.ShouldNotify(memory));   // idx 0 -> 1
        queue.AddUsed(memory, 1, 0);
        Assert.False(queue.ShouldNotify(memory));   // 1 -> 2
        queue.AddUsed(memory, 2, 0);
        Assert.True(queue.ShouldNotify(memory));    // 2 -> 3 crosses used_event 2
        queue.AddUsed(memory, 3, 0);
        Assert.False(queue.ShouldNotify(memory));   // already past it
    }

    [Fact]
    public void ShouldNotify_WithEventIdx_CoversEveryEntryAddedSinceTheLastNotification()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue(eventIdx: true);
        driver.SetUsedEvent(3);
        // A batch 0 -> 5 jumps over used_event 3: still one notification.
        for (ushort head = 0; head < 5; head++) queue.AddUsed(memory, head, 0);
        Assert.True(queue.ShouldNotify(memory));
    }

    [Fact]
    public void ShouldNotify_WithEventIdx_HandlesIndexWrapAround()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue(eventIdx: true);
        queue.NextUsedIndex = 65534;
        Assert.True(queue.ShouldNotify(memory));   // first answer after a restore is always yes
        driver.SetUsedEvent(0);
        queue.AddUsed(memory, 0, 0);               // 65534 -> 65535
        Assert.False(queue.ShouldNotify(memory));
        queue.AddUsed(memory, 1, 0);               // 65535 -> 0
        Assert.False(queue.ShouldNotify(memory));
        queue.AddUsed(memory, 2, 0);               // 0 -> 1 crosses used_event 0
        Assert.True(queue.ShouldNotify(memory));
    }

    [Theory]
    [InlineData(5, 6, 5, true)]
    [InlineData(5, 5, 4, false)]
    [InlineData(5, 10, 0, true)]
    [InlineData(5, 10, 6, false)]
    [InlineData(65535, 0, 65535, true)]
    [InlineData(65535, 2, 0, false)]
    [InlineData(0, 0, 0, false)]
    public void NeedsEvent_MatchesVringNeedEvent(int eventIndex, int newIndex, int oldIndex, bool expected) =>
        Assert.Equal(expected, Virtqueue.NeedsEvent((ushort)eventIndex, (ushort)newIndex, (ushort)oldIndex));

    [Fact]
    public void DisableAndEnableNotifications_WithoutEventIdx_ToggleNoNotify()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();

        queue.DisableNotifications(memory);
        Assert.Equal(SplitVirtqueueLayout.UsedFlagNoNotify, driver.UsedFlags);
        Assert.False(queue.EnableNotifications(memory));
        Assert.Equal(0, driver.UsedFlags);
    }

    [Fact]
    public void EnableNotifications_BuffersArrivedMeanwhile_ReturnsTrue()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        queue.DisableNotifications(memory);
        driver.AddChain(In(DataAddress, 1));
        Assert.True(queue.EnableNotifications(memory));
        Assert.True(queue.TryPopChain(memory, out _));
        Assert.False(queue.EnableNotifications(memory));
    }

    [Fact]
    public void UpdateAvailableEvent_WithEventIdx_WritesNextAvailableIndex()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(eventIdx: true);
        driver.AddChain(In(DataAddress, 1));
        driver.AddChain(In(DataAddress, 1));
        Assert.True(queue.TryPopChain(memory, out _));
        Assert.True(queue.TryPopChain(memory, out _));
        memory.TakeDeviceDirtyBitmap(memory.Regions[0]);

        queue.UpdateAvailableEvent(memory);

        Assert.Equal(2, driver.AvailableEvent);
        Assert.Equal([(UsedRingAddress + SplitVirtqueueLayout.AvailableEventOffset(4)) / 4096],
            DirtyPages(memory.TakeDeviceDirtyBitmap(memory.Regions[0])));
        // DisableNotifications leaves the flags alone under EVENT_IDX; Enable moves avail_event.
        queue.DisableNotifications(memory);
        Assert.Equal(0, driver.UsedFlags);
        driver.AddChain(In(DataAddress, 1));
        Assert.True(queue.EnableNotifications(memory));
    }

    [Fact]
    public void UpdateAvailableEvent_WithoutEventIdx_WritesNothing()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        memory.Write(UsedRingAddress + SplitVirtqueueLayout.AvailableEventOffset(4), (ushort)0xbeef);
        queue.NextAvailableIndex = 3;
        queue.UpdateAvailableEvent(memory);
        Assert.Equal(0xbeef, driver.AvailableEvent);
    }

    [Fact]
    public void Reset_RestoresTheStateAfterConstruction()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(eventIdx: true, indirect: true);
        driver.AddChain(In(DataAddress, 1));
        Assert.True(queue.TryPopChain(memory, out _));
        queue.AddUsed(memory, 0, 0);

        queue.Reset();

        Assert.Equal(Virtqueue.MaxQueueSize, queue.Size);
        Assert.False(queue.Ready);
        Assert.Equal((0UL, 0UL, 0UL), (queue.DescriptorTableAddress, queue.AvailableRingAddress, queue.UsedRingAddress));
        Assert.False(queue.EventIdxEnabled);
        Assert.False(queue.IndirectEnabled);
        Assert.Equal(0, queue.NextAvailableIndex);
        Assert.Equal(0, queue.NextUsedIndex);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(65535)]
    public void Constructor_MaxSizeNotAPowerOfTwoUpTo32768_Throws(int maxSize) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new Virtqueue((ushort)maxSize));

    [Fact]
    public void Descriptor_IsSixteenBytesLikeVirtqDesc() =>
        Assert.Equal(SplitVirtqueueLayout.DescriptorBytes, System.Runtime.CompilerServices.Unsafe.SizeOf<VirtqueueDescriptor>());

    internal static IEnumerable<ulong> DirtyPages(ulong[] bitmap)
    {
        for (int word = 0; word < bitmap.Length; word++)
            for (int bit = 0; bit < 64; bit++)
                if ((bitmap[word] & (1UL << bit)) != 0) yield return (ulong)(word * 64 + bit);
    }
}
