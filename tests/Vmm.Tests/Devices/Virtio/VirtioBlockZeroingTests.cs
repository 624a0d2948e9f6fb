using System.Buffers.Binary;
using Vmm.Devices.Virtio;
using Xunit;
using static Vmm.Tests.Devices.Virtio.VirtioBlockHarness;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>DISCARD and WRITE_ZEROES (virtio 1.2, 5.2.6): ranges as struct virtio_blk_discard_write_zeroes
/// after the header; done with fallocate on the image.</summary>
public sealed class VirtioBlockZeroingTests
{
    private const int Sector = 512, DiskSectors = 64;

    private static void WriteRanges(VirtioBlockHarness blk, int slot, params (ulong Sector, uint Sectors, uint Flags)[] ranges)
    {
        var bytes = new byte[16 * ranges.Length];
        for (int i = 0; i < ranges.Length; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(16 * i), ranges[i].Sector);
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(16 * i + 8), ranges[i].Sectors);
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(16 * i + 12), ranges[i].Flags);
        }
        blk.Memory.Write(DataAddress(slot, 0), bytes);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(1u)] // VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: may free the blocks; they still read as zeros
    public void WriteZeroes_MakesExactlyTheRangesReadAsZeros(uint flags)
    {
        byte[] original = Pattern(DiskSectors * Sector);
        using var blk = Create(original);
        blk.Start();
        WriteRanges(blk, 0, (8, 8, flags), (40, 1, flags));
        blk.Post(0, VirtioBlock.RequestWriteZeroes, 0, 32);

        blk.Driver.Kick(0);

        Assert.Equal(VirtioBlock.StatusOk, blk.Status(0));
        byte[] expected = (byte[])original.Clone();
        Array.Clear(expected, 8 * Sector, 8 * Sector);
        Array.Clear(expected, 40 * Sector, Sector);
        Assert.Equal(expected, blk.Image);
        Assert.Equal(original.Length, blk.Image.Length);
    }

    [Fact]
    public void Discard_SucceedsAndKeepsTheImageSize()
    {
        byte[] original = Pattern(DiskSectors * Sector);
        using var blk = Create(original);
        blk.Start();
        WriteRanges(blk, 0, (0, 16, 0));
        blk.Post(0, VirtioBlock.RequestDiscard, 0, 16);

        blk.Driver.Kick(0);

        Assert.Equal(VirtioBlock.StatusOk, blk.Status(0));
        Assert.Equal(original.Length, blk.Image.Length);
        Assert.Equal(original.AsSpan(16 * Sector).ToArray(), blk.Image.AsSpan(16 * Sector).ToArray());
    }

    /// <summary>On a host block device (here a loop device) a discard is BLKDISCARD, which the device passes down: the
    /// loop device frees the blocks of its backing file.</summary>
    [Fact]
    public void Discard_OnABlockDevice_ReachesTheDevice_WhichFreesTheBlocks()
    {
        string directory = Directory.CreateTempSubdirectory("vmm-blk-discard-").FullName;
        try
        {
            string backing = Path.Combine(directory, "backing.img");
            File.WriteAllBytes(backing, Pattern(4 << 20));
            long allocatedBefore = AllocatedBytes(backing);
            using (var loop = LoopDevice.Attach(backing))
            using (var blk = Open(loop.Path))
            {
                blk.Start();
                WriteRanges(blk, 0, (0, 2048, 0));
                blk.Post(0, VirtioBlock.RequestDiscard, 0, 16);
                blk.Driver.Kick(0);
                Assert.Equal(VirtioBlock.StatusOk, blk.Status(0));
            }
            Assert.True(AllocatedBytes(backing) <= allocatedBefore - (1 << 20), $"{AllocatedBytes(backing)} bytes still allocated, {allocatedBefore} before");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static long AllocatedBytes(string path) => long.Parse(HostCommand.Checked("stat", "-c", "%b", path).Trim()) * 512;

    [Fact]
    public void Discard_WithTheUnmapFlag_IsUnsupported()
    {
        using var blk = Create(Pattern(DiskSectors * Sector));
        blk.Start();
        WriteRanges(blk, 0, (0, 1, 1));
        blk.Post(0, VirtioBlock.RequestDiscard, 0, 16);

        blk.Driver.Kick(0);

        Assert.Equal(VirtioBlock.StatusUnsupported, blk.Status(0));
    }

    [Theory]
    [InlineData(DiskSectors - 1UL, 2u)]
    [InlineData(ulong.MaxValue, 1u)]
    public void WriteZeroes_PastTheEnd_IsAnIoErrorAndChangesNothing(ulong sector, uint sectors)
    {
        byte[] original = Pattern(DiskSectors * Sector);
        using var blk = Create(original);
        blk.Start();
        WriteRanges(blk, 0, (sector, sectors, 0));
        blk.Post(0, VirtioBlock.RequestWriteZeroes, 0, 16);

        blk.Driver.Kick(0);

        Assert.Equal(VirtioBlock.StatusIoError, blk.Status(0));
        Assert.Equal(original, blk.Image);
    }

    [Fact]
    public void WriteZeroes_OnAReadOnlyDisk_IsAnIoErrorAndNotOffered()
    {
        byte[] original = Pattern(DiskSectors * Sector);
        using var blk = Create(original, readOnly: true);
        blk.Start();
        WriteRanges(blk, 0, (0, 4, 0));
        blk.Post(0, VirtioBlock.RequestWriteZeroes, 0, 16);

        blk.Driver.Kick(0);

        Assert.Equal(VirtioBlock.StatusIoError, blk.Status(0));
        Assert.Equal(original, blk.Image);
        Assert.Equal(0UL, blk.Device.OfferedFeatures & (VirtioBlock.FeatureDiscard | VirtioBlock.FeatureWriteZeroes));
    }

    [Fact]
    public void WriteZeroes_WithAPayloadThatIsNotWholeRanges_IsUnsupported()
    {
        using var blk = Create(Pattern(DiskSectors * Sector));
        blk.Start();
        blk.Post(0, VirtioBlock.RequestWriteZeroes, 0, 20);

        blk.Driver.Kick(0);

        Assert.Equal(VirtioBlock.StatusUnsupported, blk.Status(0));
    }
}
