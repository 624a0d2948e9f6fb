using System.Text;
using Vmm.Devices.Virtio;
using Vmm.Memory;
using Xunit;
using static Vmm.Devices.Virtio.VirtioMmioTransport;
using static Vmm.Tests.Devices.Virtio.VirtioBlockHarness;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>virtio-blk over a temporary raw image, driven the way Linux's virtio_blk drives it.</summary>
public sealed class VirtioBlockTests : IDisposable
{
    private const int Sector = VirtioBlock.SectorBytes;
    private const int DiskSectors = 32;
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-blk-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Theory]
    [InlineData(512L)]
    [InlineData(1L << 20)]
    [InlineData(5L << 30)] // sparse: a capacity above 2^32 bytes
    public void Capacity_IsTheFileSizeInSectors(long fileBytes)
    {
        string path = Path.Combine(_directory, "disk.img");
        using (var file = File.Create(path)) file.SetLength(fileBytes);
        using var device = new VirtioBlock(new BlockDiskConfig(path, ReadOnly: false, Id: null));
        var config = new byte[8];
        device.ReadConfig(0, config);
        Assert.Equal((ulong)(fileBytes / Sector), BitConverter.ToUInt64(config));
        Assert.Equal(fileBytes, device.CapacityBytes);
    }

    [Fact]
    public void Constructor_FileSizeNotAMultipleOf512_ThrowsConfigurationExceptionNamingTheSize()
    {
        string path = Path.Combine(_directory, "odd.img");
        File.WriteAllBytes(path, new byte[1000]);
        var error = Assert.Throws<ConfigurationException>(() => new VirtioBlock(new BlockDiskConfig(path, false, null)));
        Assert.Contains("1000 bytes", error.Message);
        Assert.Contains("multiple of 512", error.Message);
        Assert.Contains(path, error.Message);
    }

    [Fact]
    public void Constructor_EmptyFile_IsRefusedSayingSo()
    {
        string path = Path.Combine(_directory, "empty.img");
        File.WriteAllBytes(path, []);
        var error = Assert.Throws<ConfigurationException>(() => new VirtioBlock(new BlockDiskConfig(path, false, null)));
        Assert.Contains($"{path} is empty (0 bytes)", error.Message);
    }

    /// <summary>A block device's inode says 0 bytes (the guest once saw "0 512-byte logical blocks"): the capacity is
    /// the device's own, and its bytes are the disk's.</summary>
    [Fact]
    public void Capacity_OfABlockDevice_IsTheDeviceSize()
    {
        string path = Path.Combine(_directory, "backing.img");
        byte[] contents = Pattern(3 << 20);
        File.WriteAllBytes(path, contents);
        using var loop = LoopDevice.Attach(path);
        Assert.Equal(0, new FileInfo(loop.Path).Length);
        using var device = new VirtioBlock(new BlockDiskConfig(loop.Path, ReadOnly: true, Id: null));
        var config = new byte[8];
        device.ReadConfig(0, config);
        Assert.Equal(3L << 20, device.CapacityBytes);
        Assert.Equal((ulong)((3 << 20) / Sector), BitConverter.ToUInt64(config));
    }

    [Theory]
    [InlineData("missing.img")]
    [InlineData("no-such-directory/missing.img")]
    public void Constructor_MissingFile_ThrowsConfigurationExceptionSayingItDoesNotExist(string relativePath)
    {
        string path = Path.Combine(_directory, relativePath);
        var error = Assert.Throws<ConfigurationException>(() => new VirtioBlock(new BlockDiskConfig(path, false, null)));
        Assert.Contains($"{path} does not exist", error.Message);
    }

    [Fact]
    public void In_ScatteredOverSeveralDataDescriptors_ReturnsTheFileBytesAtTheSector()
    {
        using var blk = Create(Pattern(DiskSectors * Sector));
        var ring = blk.Start();
        ushort head = blk.Post(0, VirtioBlock.RequestIn, 5, 512, 1024, 512);

        blk.Driver.Kick(0);

        Assert.Equal(1, ring.UsedIndex);
        Assert.Equal(((uint)head, 2048u + 1), ring.UsedElement(0));
        Assert.Equal(VirtioBlock.StatusOk, blk.Status(0));
        byte[] expected = blk.Image.AsSpan(5 * Sector, 2048).ToArray();
        byte[] actual = [.. blk.ReadGuest(DataAddress(0, 0), 512), .. blk.ReadGuest(DataAddress(0, 1), 1024), .. blk.ReadGuest(DataAddress(0, 2), 512)];
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void In_MarksTheDataPagesStatusPageAndUsedRingInTheDeviceDirtyBitmap()
    {
        using var blk = Create(Pattern(DiskSectors * Sector));
        var ring = blk.Start();
        var region = blk.Memory.Regions[0];
        // Header, data and status on pages of their own: 0x200 header, 0x202-0x204 data, 0x206 status.
        DriverBuffer[] data = [new(0x202000, 512, true), new(0x203000, 1024, true), new(0x204800, 512, true)];
        blk.Post(VirtioBlock.RequestIn, 0, data, headerAddress: 0x200000, statusAddress: 0x206000);
        blk.Memory.TakeDeviceDirtyBitmap(region);

        blk.Driver.Kick(0);

        var dirtyPages = DirtyPages(blk.Memory.TakeDeviceDirtyBitmap(region));
        ulong usedRingPage = ring.UsedRing / GuestMemoryRegion.PageSize;
        Assert.Equal([usedRingPage, 0x202, 0x203, 0x204, 0x206], dirtyPages);
    }

    private static List<ulong> DirtyPages(ulong[] bitmap)
    {
        var pages = new List<ulong>();
        for (int word = 0; word < bitmap.Length; word++)
            for (int bit = 0; bit < 64; bit++)
                if ((bitmap[word] & (1UL << bit)) != 0) pages.Add((ulong)word * 64 + (ulong)bit);
        return pages;
    }

    [Fact]
    public void Out_LandsInTheFileAtTheSectorAndNowhereElse()
    {
        byte[] original = Pattern(DiskSectors * Sector);
        using var blk = Create(original);
        var ring = blk.Start();
        byte[] payload = Pattern(1024, seed: 2);
        blk.Memory.Write(DataAddress(0, 0), payload.AsSpan(0, 512));
        blk.Memory.Write(DataAddress(0, 1), payload.AsSpan(512, 512));
        ushort head = blk.Post(0, VirtioBlock.RequestOut, 7, 512, 512);

        blk.Driver.Kick(0);

        Assert.Equal(((uint)head, 1u), ring.UsedElement(0));
        Assert.Equal(VirtioBlock.StatusOk, blk.Status(0));
        byte[] expected = (byte[])original.Clone();
        payload.CopyTo(expected, 7 * Sector);
        Assert.Equal(expected, blk.Image);
    }

    [Theory]
    [InlineData(VirtioBlock.RequestIn, DiskSectors - 1UL, 1024u)] // starts inside, ends past the end
    [InlineData(VirtioBlock.RequestIn, (ulong)DiskSectors, 512u)]
    [InlineData(VirtioBlock.RequestIn, ulong.MaxValue, 512u)]
    [InlineData(VirtioBlock.RequestIn, ulong.MaxValue / 512 + 1, 512u)] // sector * 512 wraps to 0
    [InlineData(VirtioBlock.RequestOut, DiskSectors - 1UL, 1024u)]
    [InlineData(VirtioBlock.RequestOut, (ulong)DiskSectors, 512u)]
    [InlineData(VirtioBlock.RequestOut, ulong.MaxValue / 512 + 1, 512u)]
    public void InOrOut_PastTheEndOfTheDisk_AnswersIoErrorAndLeavesFileAndBufferAlone(uint type, ulong sector, uint length)
    {
        byte[] original = Pattern(DiskSectors * Sector);
        using var blk = Create(original);
        var ring = blk.Start();
        blk.Memory.Fill(DataAddress(0, 0), length, 0xaa);
        ushort head = blk.Post(0, type, sector, length);

        blk.Driver.Kick(0);

        Assert.Equal(((uint)head, 1u), ring.UsedElement(0));
        Assert.Equal(VirtioBlock.StatusIoError, blk.Status(0));
        Assert.Equal(original, blk.Image);
        Assert.All(blk.ReadGuest(DataAddress(0, 0), (int)length), b => Assert.Equal(0xaa, b));
    }

    [Fact]
    public void ReadOnlyDisk_OffersTheRoFeatureAndAnswersOutWithIoError()
    {
        byte[] original = Pattern(DiskSectors * Sector);
        using var blk = Create(original, readOnly: true);
        Assert.Equal(VirtioBlock.FeatureReadOnly, blk.Driver.ReadDeviceFeatures() & VirtioBlock.FeatureReadOnly);
        var ring = blk.Start(VirtioFeatures.Version1 | VirtioBlock.FeatureReadOnly);
        blk.Memory.Fill(DataAddress(0, 0), 512, 0x5a);
        blk.Post(0, VirtioBlock.RequestOut, 0, 512);
        blk.Post(1, VirtioBlock.RequestIn, 1, 512);
        blk.Post(2, VirtioBlock.RequestFlush, 0);

        blk.Driver.Kick(0);

        Assert.Equal(3, ring.UsedIndex);
        Assert.Equal(VirtioBlock.StatusIoError, blk.Status(0));
        Assert.Equal(VirtioBlock.StatusOk, blk.Status(1));
        Assert.Equal(VirtioBlock.StatusOk, blk.Status(2));
        Assert.Equal(original, blk.Image);
        Assert.Equal(original.AsSpan(Sector, Sector).ToArray(), blk.ReadGuest(DataAddress(1, 0), Sector));
    }

    [Fact]
    public void WritableDisk_DoesNotOfferTheRoFeature()
    {
        using var blk = Create(Pattern(DiskSectors * Sector));
        Assert.Equal(0UL, blk.Driver.ReadDeviceFeatures() & VirtioBlock.FeatureReadOnly);
    }

    [Fact]
    public void Flush_AnswersOkWithUsedLengthOne()
    {
        using var blk = Create(Pattern(DiskSectors * Sector));
        var ring = blk.Start(VirtioFeatures.Version1 | VirtioBlock.FeatureFlush);
        ushort head = blk.Post(0, VirtioBlock.RequestFlush, 0);

        blk.Driver.Kick(0);

        Assert.Equal(((uint)head, 1u), ring.UsedElement(0));
        Assert.Equal(VirtioBlock.StatusOk, blk.Status(0));
    }

    [Theory]
    [InlineData("disk-7", null, "disk-7")]
    [InlineData(null, "root.img", "root.img")]
    [InlineData("exactly-twenty-bytes", null, "exactly-twenty-bytes")]
    [InlineData(null, "a-file-name-longer-than-twenty.img", "a-file-name-longer-t")]
    public void GetId_ReturnsTheIdFromIdOrFileNameNulTerminatedWhenShort(string? id, string? fileName, string expected)
    {
        using var blk = Create(Pattern(DiskSectors * Sector), id: id, fileName: fileName ?? "disk.img");
        var ring = blk.Start();
        blk.Memory.Fill(DataAddress(0, 0), BlockDiskConfig.MaxIdBytes, 0xff);
        ushort head = blk.Post(0, VirtioBlock.RequestGetId, 0, BlockDiskConfig.MaxIdBytes);

        blk.Driver.Kick(0);

        Assert.Equal(VirtioBlock.StatusOk, blk.Status(0));
        byte[] answer = blk.ReadGuest(DataAddress(0, 0), BlockDiskConfig.MaxIdBytes);
        byte[] idBytes = Encoding.UTF8.GetBytes(expected);
        Assert.Equal(idBytes, answer.AsSpan(0, idBytes.Length).ToArray());
        bool terminated = idBytes.Length < BlockDiskConfig.MaxIdBytes;
        if (terminated) Assert.Equal(0, answer[idBytes.Length]);
        Assert.Equal(((uint)head, (uint)(idBytes.Length + (terminated ? 1 : 0) + 1)), ring.UsedElement(0));
    }

    [Theory]
    [InlineData(2u)] // VIRTIO_BLK_T_SCSI_CMD
    [InlineData(11u)] // DISCARD, not offered
    [InlineData(13u)] // WRITE_ZEROES, not offered
    [InlineData(0xdeadu)]
    public void UnknownRequestType_AnswersUnsupported(uint type)
    {
        byte[] original = Pattern(DiskSectors * Sector);
        using var blk = Create(original);
        var ring = blk.Start();
        ushort head = blk.Post(type, 0, [new DriverBuffer(DataAddress(0, 0), 512, false)], HeaderAddress(0), StatusAddress(0));

        blk.Driver.Kick(0);

        Assert.Equal(((uint)head, 1u), ring.UsedElement(0));
        Assert.Equal(VirtioBlock.StatusUnsupported, blk.Status(0));
        Assert.Equal(original, blk.Image);
    }

    [Fact]
    public void Request_WithoutStatusByte_PutsTheDeviceInNeedsReset()
    {
        using var blk = Create(Pattern(DiskSectors * Sector));
        var ring = blk.Start();
        blk.WriteHeader(HeaderAddress(0), VirtioBlock.RequestIn, 0);
        ring.AddChain(new DriverBuffer(HeaderAddress(0), 16, false), new DriverBuffer(DataAddress(0, 0), 512, false));

        Assert.Null(Record.Exception(() => blk.Driver.Kick(0)));

        Assert.Equal(StatusDeviceNeedsReset, blk.Driver.Status & StatusDeviceNeedsReset);
        Assert.Equal(0, ring.UsedIndex);
        Assert.Contains("status byte", blk.Log.ToString());
    }

    [Fact]
    public void Request_WithAShortHeader_PutsTheDeviceInNeedsReset()
    {
        using var blk = Create(Pattern(DiskSectors * Sector));
        var ring = blk.Start();
        blk.WriteHeader(HeaderAddress(0), VirtioBlock.RequestIn, 0);
        ring.AddChain(new DriverBuffer(HeaderAddress(0), 12, false), new DriverBuffer(DataAddress(0, 0), 512, true), new DriverBuffer(StatusAddress(0), 1, true));

        Assert.Null(Record.Exception(() => blk.Driver.Kick(0)));

        Assert.Equal(StatusDeviceNeedsReset, blk.Driver.Status & StatusDeviceNeedsReset);
        Assert.Equal(InterruptConfigChange, blk.Driver.InterruptStatus & InterruptConfigChange);
        Assert.Equal(0, ring.UsedIndex);
    }

    [Fact]
    public void Batch_CompletesEveryRequestInOrderWithOneKickAndOneInterrupt()
    {
        byte[] original = Pattern(DiskSectors * Sector);
        using var blk = Create(original);
        var ring = blk.Start();
        for (int i = 0; i < 16; i++) blk.Post(i, VirtioBlock.RequestIn, (ulong)i, 512);

        blk.Driver.Kick(0);

        Assert.Equal(16, ring.UsedIndex);
        Assert.Equal(1, blk.Interrupt.Triggers);
        for (int i = 0; i < 16; i++)
        {
            Assert.Equal(((uint)(3 * i), 513u), ring.UsedElement((ushort)i));
            Assert.Equal(original.AsSpan(i * Sector, Sector).ToArray(), blk.ReadGuest(DataAddress(i, 0), Sector));
        }
    }

    [Fact]
    public void WithoutEventIdx_NoInterruptFlagSuppressesInterrupts()
    {
        using var blk = Create(Pattern(DiskSectors * Sector));
        var ring = blk.Start();
        ring.SetAvailableFlags(Vmm.Devices.Virtio.SplitVirtqueueLayout.AvailableFlagNoInterrupt);
        for (int i = 0; i < 4; i++) blk.Post(i, VirtioBlock.RequestIn, (ulong)i, 512);

        blk.Driver.Kick(0);

        Assert.Equal(4, ring.UsedIndex);
        Assert.Equal(0, blk.Interrupt.Triggers);
    }

    [Fact]
    public void WithEventIdx_EveryRequestOfADriverThatKicksOnlyWhenAskedCompletes()
    {
        // virtio_blk submits one request at a time and kicks only when avail_event says so
        // (virtqueue_kick_prepare). A device that never moves avail_event is never kicked again.
        using var blk = Create(Pattern(DiskSectors * Sector));
        var ring = blk.Start(VirtioFeatures.Version1 | VirtioFeatures.RingEventIndex);
        int kicks = 0;
        for (int i = 0; i < 20; i++)
        {
            ushort before = ring.AvailableIndex;
            blk.Post(i, VirtioBlock.RequestIn, (ulong)(i % DiskSectors), 512);
            if (blk.Driver.KickIfNeeded(0, ring, before, eventIdx: true)) kicks++;
            Assert.Equal(i + 1, ring.UsedIndex);
        }
        Assert.Equal(20, kicks);
        Assert.Equal(20, ring.AvailableEvent);
    }

    [Fact]
    public void WithEventIdx_InterruptsOnlyWhenUsedIdxCrossesUsedEvent()
    {
        using var blk = Create(Pattern(DiskSectors * Sector));
        var ring = blk.Start(VirtioFeatures.Version1 | VirtioFeatures.RingEventIndex);

        // virtqueue_enable_cb_delayed: interrupt me once most of the 8 outstanding requests are done.
        ring.SetUsedEvent(5);
        for (int i = 0; i < 8; i++) blk.Post(i, VirtioBlock.RequestIn, (ulong)i, 512);
        blk.Driver.Kick(0);
        Assert.Equal(8, ring.UsedIndex);
        Assert.Equal(1, blk.Interrupt.Triggers);

        // Polling (callbacks disabled): used_event left behind, no interrupt for the next batch.
        for (int i = 8; i < 16; i++) blk.Post(i, VirtioBlock.RequestIn, (ulong)i, 512);
        blk.Driver.Kick(0);
        Assert.Equal(16, ring.UsedIndex);
        Assert.Equal(1, blk.Interrupt.Triggers);

        // virtqueue_enable_cb: interrupt me at the next used buffer.
        ring.SetUsedEvent(16);
        blk.Post(16, VirtioBlock.RequestIn, 0, 512);
        blk.Driver.Kick(0);
        Assert.Equal(17, ring.UsedIndex);
        Assert.Equal(2, blk.Interrupt.Triggers);
        Assert.Equal(InterruptUsedBuffer, blk.Driver.AcknowledgeInterrupt());
    }
}
