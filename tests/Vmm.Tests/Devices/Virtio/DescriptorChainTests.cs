using Vmm.Devices.Virtio;
using Xunit;
using static Vmm.Tests.Devices.Virtio.SplitRingDriver;

namespace Vmm.Tests.Devices.Virtio;

public sealed class DescriptorChainTests
{
    private static DriverBuffer In(ulong address, uint length) => new(address, length, DeviceWritable: false);
    private static DriverBuffer Out(ulong address, uint length) => new(address, length, DeviceWritable: true);

    [Fact]
    public void Read_AcrossSegmentBoundaries_ReturnsTheBytesInChainOrder()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        memory.Write(DataAddress + 0x2000, "abc"u8);
        memory.Write(DataAddress, "defgh"u8);
        memory.Write(DataAddress + 0x5000, "ij"u8);
        driver.AddChain(In(DataAddress + 0x2000, 3), In(DataAddress, 5), In(DataAddress + 0x5000, 2), Out(DataAddress + 0x8000, 100));
        Assert.True(queue.TryPopChain(memory, out var chain));

        var all = new byte[20];
        Assert.Equal(10, chain.Read(memory, 0, all));
        Assert.Equal("abcdefghij"u8.ToArray(), all[..10]);

        var middle = new byte[4];
        Assert.Equal(4, chain.Read(memory, 2, middle));
        Assert.Equal("cdef"u8.ToArray(), middle);

        Assert.Equal(1, chain.Read(memory, 9, middle));
        Assert.Equal((byte)'j', middle[0]);
        Assert.Equal(0, chain.Read(memory, 10, middle));
        Assert.Equal(0, chain.Read(memory, long.MaxValue, middle));
    }

    [Fact]
    public void Write_AcrossSegmentBoundaries_FillsTheWritableBuffersAndMarksThemDirty()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        driver.AddChain(In(DataAddress, 16), Out(DataAddress + 0x2ffe, 4), Out(DataAddress + 0x9000, 3));
        Assert.True(queue.TryPopChain(memory, out var chain));
        memory.TakeDeviceDirtyBitmap(memory.Regions[0]);

        Assert.Equal(7, chain.Write(memory, 0, "0123456789"u8));

        var first = new byte[4];
        var second = new byte[3];
        memory.Read(DataAddress + 0x2ffe, first);
        memory.Read(DataAddress + 0x9000, second);
        Assert.Equal("0123"u8.ToArray(), first);
        Assert.Equal("456"u8.ToArray(), second);
        // The first buffer straddles a page boundary: both pages, and the second buffer's page.
        ulong page = (DataAddress + 0x2ffe) / 4096;
        Assert.Equal([page, page + 1, (DataAddress + 0x9000) / 4096], VirtqueueTests.DirtyPages(memory.TakeDeviceDirtyBitmap(memory.Regions[0])));

        Assert.Equal(2, chain.Write(memory, 5, "xyz"u8));
        memory.Read(DataAddress + 0x9000, second);
        Assert.Equal("4xy"u8.ToArray(), second);
        Assert.Equal(0, chain.Write(memory, 7, "z"u8));
    }

    [Fact]
    public void ReadAndWrite_NegativeOffset_IsADeviceBug()
    {
        using var memory = OneMiB();
        var chain = new DescriptorChain();
        Assert.Throws<ArgumentOutOfRangeException>(() => chain.Read(memory, -1, new byte[1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => chain.Write(memory, -1, new byte[1]));
    }

    [Fact]
    public void Clone_SurvivesTheNextPop()
    {
        using var memory = OneMiB();
        var driver = new SplitRingDriver(memory, 4);
        var queue = driver.CreateQueue();
        ushort firstHead = driver.AddChain(In(DataAddress, 16), Out(DataAddress + 16, 32));
        driver.AddChain(Out(DataAddress + 64, 8));

        Assert.True(queue.TryPopChain(memory, out var chain));
        var kept = chain.Clone();
        Assert.True(queue.TryPopChain(memory, out var next));

        Assert.Same(chain, next);
        Assert.Equal(firstHead, kept.HeadIndex);
        Assert.Equal([new DescriptorSegment(DataAddress, 16)], kept.Readable);
        Assert.Equal([new DescriptorSegment(DataAddress + 16, 32)], kept.Writable);
        Assert.Equal((16L, 32L), (kept.ReadableBytes, kept.WritableBytes));
    }
}
