using Vmm.Devices.Virtio;
using Vmm.Memory;
using Xunit;
using static Vmm.Devices.Virtio.VirtqueueDescriptor;
using static Vmm.Tests.Devices.Virtio.SplitRingDriver;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>Each rule a hostile driver can break, and the message that names it.</summary>
public sealed class VirtqueueValidationTests
{
    private static DriverBuffer In(ulong address, uint length) => new(address, length, DeviceWritable: false);
    private static DriverBuffer Out(ulong address, uint length) => new(address, length, DeviceWritable: true);

    private static void AssertPopThrows(GuestMemory memory, Virtqueue queue, string expectedMessagePart)
    {
        ushort nextBefore = queue.NextAvailableIndex;
        var error = Assert.Throws<VirtqueueException>(() => queue.TryPopChain(memory, out _));
        Assert.Contains(expectedMessagePart, error.Message);
        Assert.Equal(nextBefore, queue.NextAvailableIndex);
    }

    [Fact]
    public void HeadIndexOutsideTheQueue_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue();
        driver.Publish(8);
        AssertPopThrows(memory, queue, "names descriptor 8, outside the 8-entry descriptor table");
    }

    [Fact]
    public void NextIndexOutsideTheQueue_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue();
        driver.WriteDescriptor(0, DataAddress, 16, FlagNext, next: 9);
        driver.Publish(0);
        AssertPopThrows(memory, queue, "has next 9, outside the 8-entry descriptor table");
    }

    [Fact]
    public void LoopThroughNext_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue();
        driver.WriteDescriptor(0, DataAddress, 16, FlagNext, next: 1);
        driver.WriteDescriptor(1, DataAddress, 16, FlagNext, next: 2);
        driver.WriteDescriptor(2, DataAddress, 16, FlagNext, next: 0);
        driver.Publish(0);
        AssertPopThrows(memory, queue, "longer than its 8-entry descriptor table (a loop through next)");
    }

    [Fact]
    public void DescriptorPointingAtItself_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 1);
        var queue = driver.CreateQueue();
        driver.WriteDescriptor(0, DataAddress, 16, FlagNext, next: 0);
        driver.Publish(0);
        AssertPopThrows(memory, queue, "a loop through next");
    }

    [Fact]
    public void ChainLongerThanTheQueue_Throws()
    {
        // Nine links in an 8-entry table: the ninth must revisit one of the eight.
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue();
        for (ushort i = 0; i < 8; i++) driver.WriteDescriptor(i, DataAddress, 1, FlagNext, (ushort)((i + 1) % 8));
        driver.Publish(3);
        AssertPopThrows(memory, queue, "longer than its 8-entry descriptor table");
    }

    [Fact]
    public void BufferOutsideGuestRam_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        driver.AddChain(In(1UL << 20, 1));
        AssertPopThrows(memory, queue, "points at 0x100000+0x1, which is not inside one region of guest RAM");
    }

    [Fact]
    public void BufferRunningPastTheEndOfRam_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        driver.AddChain(Out((1UL << 20) - 16, 17));
        AssertPopThrows(memory, queue, "not inside one region of guest RAM");
    }

    [Fact]
    public void BufferWhoseEndOverflows64Bits_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        driver.AddChain(In(ulong.MaxValue - 0xf, 0x100));
        AssertPopThrows(memory, queue, "points at 0xfffffffffffffff0+0x100");
    }

    [Fact]
    public void BufferCrossingFromRamIntoTheMmioHole_Throws()
    {
        // RAM below the hole and again above it, like X86Layout's layout in miniature.
        using var memory = GuestMemory.Allocate([(0, 1UL << 20), (2UL << 20, 1UL << 20)]);
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        driver.AddChain(In((1UL << 20) - 8, 8), In(2UL << 20, 4096));
        Assert.True(queue.TryPopChain(memory, out _));
        driver.AddChain(In((1UL << 20) - 8, 16));
        AssertPopThrows(memory, queue, "points at 0xffff8+0x10, which is not inside one region of guest RAM");
    }

    [Fact]
    public void ReadableBufferAfterWritableOne_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        driver.AddChain(In(DataAddress, 16), Out(DataAddress + 16, 16), In(DataAddress + 32, 16));
        AssertPopThrows(memory, queue, "device-readable buffer after a device-writable one");
    }

    [Fact]
    public void ReadableBufferAfterWritableOneInsideAnIndirectTable_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(indirect: true);
        driver.AddIndirectChain(DataAddress + 0x10000, [Out(DataAddress, 16), In(DataAddress + 16, 16)]);
        AssertPopThrows(memory, queue, "device-readable buffer after a device-writable one");
    }

    [Fact]
    public void ReadableBufferInTableAfterWritableDirectDescriptor_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(indirect: true);
        ulong table = DataAddress + 0x10000;
        driver.WriteDescriptor(table, 0, DataAddress, 16, 0);
        driver.WriteDescriptor(0, DataAddress + 0x100, 16, FlagWrite | FlagNext, next: 1);
        driver.WriteDescriptor(1, table, 16, FlagIndirect);
        driver.Publish(0);
        AssertPopThrows(memory, queue, "device-readable buffer after a device-writable one");
    }

    [Fact]
    public void IndirectWithoutTheFeature_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(indirect: false);
        driver.AddIndirectChain(DataAddress + 0x10000, [In(DataAddress, 16)]);
        AssertPopThrows(memory, queue, "VIRTIO_F_RING_INDIRECT_DESC was not negotiated");
    }

    [Fact]
    public void IndirectTogetherWithNext_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(indirect: true);
        ulong table = DataAddress + 0x10000;
        driver.WriteDescriptor(table, 0, DataAddress, 16, 0);
        driver.WriteDescriptor(0, table, 16, FlagIndirect | FlagNext, next: 1);
        driver.WriteDescriptor(1, DataAddress, 16, 0);
        driver.Publish(0);
        AssertPopThrows(memory, queue, "has both the INDIRECT and NEXT flags");
    }

    [Fact]
    public void NestedIndirectTable_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(indirect: true);
        ulong outer = DataAddress + 0x10000, inner = DataAddress + 0x11000;
        driver.WriteDescriptor(inner, 0, DataAddress, 16, 0);
        driver.WriteDescriptor(outer, 0, inner, 16, FlagIndirect);
        driver.WriteDescriptor(0, outer, 16, FlagIndirect);
        driver.Publish(0);
        AssertPopThrows(memory, queue, "nested indirect tables are not allowed");
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(8u)]
    [InlineData(17u)]
    [InlineData(16u * 65536)]
    public void IndirectTableLengthNotANonZeroMultipleOf16UpTo65535Entries_Throws(uint length)
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(indirect: true);
        driver.WriteDescriptor(0, 0, length, FlagIndirect);
        driver.Publish(0);
        AssertPopThrows(memory, queue, $"indirect table length {length}");
    }

    [Fact]
    public void IndirectTableOutsideGuestRam_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(indirect: true);
        driver.WriteDescriptor(0, (1UL << 20) - 32, 48, FlagIndirect);
        driver.Publish(0);
        AssertPopThrows(memory, queue, "indirect table 0xfffe0+0x30 at descriptor 0 (chain head 0) is not inside one region of guest RAM");
    }

    [Fact]
    public void LoopInsideAnIndirectTable_IsBoundedByItsEntryCount()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(indirect: true);
        ulong table = DataAddress + 0x10000;
        driver.WriteDescriptor(table, 0, DataAddress, 16, FlagNext, next: 1);
        driver.WriteDescriptor(table, 1, DataAddress, 16, FlagNext, next: 0);
        driver.WriteDescriptor(0, table, 32, FlagIndirect);
        driver.Publish(0);
        AssertPopThrows(memory, queue, "longer than its 2-entry indirect table (a loop through next)");
    }

    [Fact]
    public void NextOutsideAnIndirectTable_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue(indirect: true);
        ulong table = DataAddress + 0x10000;
        driver.WriteDescriptor(table, 0, DataAddress, 16, FlagNext, next: 2);
        driver.WriteDescriptor(0, table, 32, FlagIndirect);
        driver.Publish(0);
        AssertPopThrows(memory, queue, "has next 2, outside the 2-entry indirect table");
    }

    [Fact]
    public void AvailableIndexMoreThanTheQueueSizeAhead_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue();
        driver.SetAvailableIndex(9);
        AssertPopThrows(memory, queue, "available ring idx 9 is more than the queue size 8 ahead of the device's 0");
    }

    [Fact]
    public void AvailableIndexMovedBackwards_Throws()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 8);
        var queue = driver.CreateQueue();
        queue.NextAvailableIndex = 100;
        driver.SetAvailableIndex(99);
        AssertPopThrows(memory, queue, "available ring idx 99 is more than the queue size 8 ahead of the device's 100");
    }

    [Fact]
    public void AvailableIndexExactlyTheQueueSizeAhead_IsAccepted()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        for (int i = 0; i < 4; i++) driver.AddChain(In(DataAddress, 1));
        for (int i = 0; i < 4; i++) Assert.True(queue.TryPopChain(memory, out _));
        Assert.False(queue.TryPopChain(memory, out _));
    }

    [Fact]
    public void ChainLongerThan4GiBInTotal_Throws()
    {
        // MAP_NORESERVE: the 6 GiB region costs nothing until touched, and nothing here touches the buffers.
        using var memory = GuestMemory.Allocate([(0, 6UL << 30)]);
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        driver.AddChain(In(1UL << 30, uint.MaxValue), Out(DataAddress, 1));
        Assert.True(queue.TryPopChain(memory, out var chain));
        Assert.Equal(DescriptorChain.MaxTotalBytes, chain.ReadableBytes + chain.WritableBytes);
        driver.AddChain(In(1UL << 30, uint.MaxValue), Out(DataAddress, 2));
        AssertPopThrows(memory, queue, "longer than 2^32 bytes in total");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(12)]
    [InlineData(32)]
    public void Validate_SizeNotAPowerOfTwoUpToMaxSize_Throws(int size)
    {
        using var memory = OneMiB();
        var queue = new Virtqueue(16) { Size = (ushort)size, DescriptorTableAddress = 0x1000, AvailableRingAddress = 0x2000, UsedRingAddress = 0x3000 };
        var error = Assert.Throws<VirtqueueException>(() => queue.Validate(memory));
        Assert.Contains($"queue size {size} is not a power of two between 1 and 16", error.Message);
    }

    [Theory]
    [InlineData(0x1008UL, 0x2000UL, 0x3000UL, "descriptor table address 0x1008 is not 16-byte aligned")]
    [InlineData(0x1000UL, 0x2001UL, 0x3000UL, "available ring address 0x2001 is not 2-byte aligned")]
    [InlineData(0x1000UL, 0x2000UL, 0x3002UL, "used ring address 0x3002 is not 4-byte aligned")]
    [InlineData(0xfff00UL, 0x2000UL, 0x3000UL, "descriptor table 0xfff00+0x1000 is not inside guest RAM")]
    [InlineData(0x1000UL, 0x100000UL, 0x3000UL, "available ring 0x100000+0x206 is not inside guest RAM")]
    // The used ring's 6 + 8 * 256 bytes include avail_event: ending 2 bytes short of them does not fit.
    [InlineData(0x1000UL, 0x2000UL, 0x100000UL - 0x804, "used ring 0xff7fc+0x806 is not inside guest RAM")]
    public void Validate_AreaMisalignedOrOutsideRam_Throws(ulong descriptors, ulong available, ulong used, string expected)
    {
        using var memory = OneMiB();
        var queue = new Virtqueue(256) { DescriptorTableAddress = descriptors, AvailableRingAddress = available, UsedRingAddress = used };
        var error = Assert.Throws<VirtqueueException>(() => queue.Validate(memory));
        Assert.Equal(expected, error.Message);
    }

    [Theory]
    [InlineData(0x100000UL - 0x1000, 0x2000UL, 0x3000UL)]
    [InlineData(0x1000UL, 0x100000UL - 0x206, 0x3000UL)]
    // 6 + 8 * size is never a multiple of 4, so the closest a 4-aligned used ring gets is 2 bytes short.
    [InlineData(0x1000UL, 0x2000UL, 0x100000UL - 0x808)]
    public void Validate_AreaEndingAtTheEndOfRam_IsAccepted(ulong descriptors, ulong available, ulong used)
    {
        using var memory = OneMiB();
        var queue = new Virtqueue(256) { DescriptorTableAddress = descriptors, AvailableRingAddress = available, UsedRingAddress = used };
        queue.Validate(memory);
    }

    [Fact]
    public void TryPopChain_LayoutChangedToOutsideRam_ThrowsVirtqueueExceptionNotAMemoryError()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        queue.AvailableRingAddress = 1UL << 40;
        var error = Assert.Throws<VirtqueueException>(() => queue.TryPopChain(memory, out _));
        Assert.Contains("available ring 0x10000000000+0xe is not inside guest RAM", error.Message);
    }
}
