using Vmm.Memory;
using Xunit;

namespace Vmm.Tests.Memory;

public sealed class GuestMemoryRingIndexTests
{
    [Fact]
    public void ReadUInt16Acquire_ReadsTheLittleEndianValue()
    {
        using var memory = GuestMemory.Allocate([(0, 1UL << 20)]);
        memory.Write<ushort>(0x2002, 0xbeef);
        Assert.Equal(0xbeef, memory.ReadUInt16Acquire(0x2002));
    }

    [Fact]
    public void WriteUInt16ReleaseFromDevice_WritesAndMarksThePageDirty()
    {
        using var memory = GuestMemory.Allocate([(0, 1UL << 20)]);
        memory.WriteUInt16ReleaseFromDevice(0x5002, 0x1234);
        Assert.Equal(0x1234, memory.Read<ushort>(0x5002));
        ulong[] dirty = memory.TakeDeviceDirtyBitmap(memory.Regions[0]);
        Assert.Equal(1UL << 5, dirty[0]);
    }

    [Fact]
    public void RingIndexAccessors_OutsideRam_Throw()
    {
        using var memory = GuestMemory.Allocate([(0, 1UL << 20)]);
        Assert.Throws<GuestMemoryException>(() => memory.ReadUInt16Acquire((1UL << 20) - 1));
        Assert.Throws<GuestMemoryException>(() => memory.WriteUInt16ReleaseFromDevice(1UL << 20, 1));
    }
}
