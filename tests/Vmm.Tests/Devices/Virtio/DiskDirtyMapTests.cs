using Vmm.Devices.Virtio;
using Xunit;

namespace Vmm.Tests.Devices.Virtio;

public sealed class DiskDirtyMapTests
{
    private const int Block = DiskDirtyMap.BlockBytes;

    [Fact]
    public void Mark_CoversEveryBlockTheRangeTouches_AndTakeClearsThem()
    {
        var map = new DiskDirtyMap(10L * Block);
        map.Mark(Block - 512, 1024);   // straddles blocks 0 and 1
        map.Mark(5L * Block, Block);   // exactly block 5
        map.Mark(9L * Block + 7, 1);   // the last block

        Assert.Equal(4, map.Count());
        Assert.Equal([0L, 1, 5, 9], map.Take());
        Assert.Empty(map.Take());
    }

    [Fact]
    public void Mark_IgnoresEmptyRangesAndClipsAtTheEnd()
    {
        var map = new DiskDirtyMap(3L * Block + 512); // a last block that is partly past the image
        map.Mark(0, 0);
        map.Mark(100L * Block, Block);
        map.Mark(3L * Block, 10L * Block);

        Assert.Equal([3L], map.Take());
    }

    [Fact]
    public async Task ConcurrentMarksAndTakes_LoseNoMark()
    {
        var map = new DiskDirtyMap(4096L * Block);
        var taken = new HashSet<long>();
        var marking = Task.Run(() =>
        {
            for (long block = 0; block < 4096; block++) map.Mark(block * Block, 1);
        });
        while (!marking.IsCompleted) taken.UnionWith(map.Take());
        await marking;
        taken.UnionWith(map.Take());

        Assert.Equal(4096, taken.Count);
    }
}
