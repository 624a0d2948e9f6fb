using Vmm.Devices.Virtio;
using Xunit;
using static Vmm.Devices.Virtio.VirtioMmioTransport;
using static Vmm.Tests.Devices.Virtio.VirtioBlockHarness;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>The virtio-mmio register window as Linux's virtio_mmio driver uses it, with a virtio-blk device
/// behind it. Every access goes through transport.Read/Write, as a trapped MMIO access would.</summary>
public sealed class VirtioMmioTransportTests : IDisposable
{
    private const int DiskSectors = 64;
    private readonly VirtioBlockHarness _blk = Create(Pattern(DiskSectors * VirtioBlock.SectorBytes));

    public void Dispose() => _blk.Dispose();

    private MmioDriver Driver => _blk.Driver;

    /// <summary>A one-sector read in <paramref name="slot"/>; returns after the kick.</summary>
    private void ReadOneSector(int slot, ulong sector = 0)
    {
        _blk.Post(slot, VirtioBlock.RequestIn, sector, VirtioBlock.SectorBytes);
        Driver.Kick(0);
    }

    [Fact]
    public void IdentificationRegisters_SayVirtioVersion2BlockDeviceFromVmm()
    {
        Assert.Equal(0x74726976u, Driver.Read(RegMagic));
        Assert.Equal(2u, Driver.Read(RegVersion));
        Assert.Equal(2u, Driver.Read(RegDeviceId));
        Assert.Equal(VendorId, Driver.Read(RegVendorId));
    }

    private const uint BlockFeaturesBank0 = (1u << 2) | (1u << 6) | (1u << 9) | (1u << 13) | (1u << 14) | (1u << 28) | (1u << 29);

    [Fact]
    public void DeviceFeatures_AreSplitIntoTwo32BitBanksAndLaterBanksReadZero()
    {
        Driver.Write(RegDeviceFeaturesSel, 0);
        uint low = Driver.Read(RegDeviceFeatures);
        Driver.Write(RegDeviceFeaturesSel, 1);
        uint high = Driver.Read(RegDeviceFeatures);
        Driver.Write(RegDeviceFeaturesSel, 2);
        uint beyond = Driver.Read(RegDeviceFeatures);

        // seg_max (2), blk_size (6), flush (9), discard (13), write_zeroes (14), indirect (28), event_idx (29);
        // VERSION_1 is bit 32.
        Assert.Equal(BlockFeaturesBank0, low);
        Assert.Equal(1u, high);
        Assert.Equal(0u, beyond);
    }

    [Fact]
    public void FeaturesOk_AcceptedForOfferedFeaturesWithVersion1()
    {
        Assert.True(Driver.NegotiateFeatures(VirtioFeatures.Version1 | VirtioFeatures.RingEventIndex | VirtioBlock.FeatureFlush));
        Assert.Equal(StatusAcknowledge | StatusDriver | StatusFeaturesOk, Driver.Status);
    }

    [Theory]
    [InlineData(VirtioFeatures.Version1 | VirtioBlock.FeatureReadOnly)] // RO is not offered for a writable disk
    [InlineData(VirtioFeatures.Version1 | (1UL << 40))]
    [InlineData(VirtioFeatures.RingEventIndex)] // a legacy driver: no VERSION_1
    [InlineData(0UL)]
    public void FeaturesOk_StaysClearOnReReadWhenFeaturesAreNotOfferedOrLackVersion1(ulong features)
    {
        Assert.False(Driver.NegotiateFeatures(features));
        Assert.Equal(StatusAcknowledge | StatusDriver, Driver.Status);
        Assert.Contains("refusing features", _blk.Log.ToString());
    }

    [Fact]
    public void DriverFeatures_WrittenAfterFeaturesOkAreIgnored()
    {
        Assert.True(Driver.NegotiateFeatures(VirtioFeatures.Version1));
        // Clearing VERSION_1 now would make the device legacy; the write must not count. Reset and a
        // fresh FEATURES_OK without writing features would be refused, so the features are not cleared.
        Driver.Write(RegDriverFeaturesSel, 1);
        Driver.Write(RegDriverFeatures, 0);
        var ring = _blk.Ring = Driver.SetupQueue(0, 16);
        Driver.DriverOk();
        _blk.Post(0, VirtioBlock.RequestIn, 0, VirtioBlock.SectorBytes);
        Driver.Kick(0);

        Assert.Equal(1, ring.UsedIndex);
        Assert.Equal(VirtioBlock.StatusOk, _blk.Status(0));
    }

    [Fact]
    public void Status_ClearingBitsWithoutResetIsIgnored()
    {
        _blk.Start();
        uint running = StatusAcknowledge | StatusDriver | StatusFeaturesOk | StatusDriverOk;

        Driver.Write(RegStatus, StatusAcknowledge | StatusDriver);

        Assert.Equal(running, Driver.Status);
        Assert.Contains("without a reset", _blk.Log.ToString());
        ReadOneSector(0);
        Assert.Equal(1, _blk.Ring.UsedIndex);
    }

    [Fact]
    public void Status_WritingZeroResetsStatusInterruptsQueuesSelectorsAndFeatures()
    {
        _blk.Start();
        ReadOneSector(0);
        Assert.Equal(InterruptUsedBuffer, Driver.InterruptStatus);
        Driver.Write(RegDeviceFeaturesSel, 1);
        Driver.Write(RegQueueSel, 5);

        Driver.Reset();

        Assert.Equal(0u, Driver.Status);
        Assert.Equal(0u, Driver.InterruptStatus);
        Assert.Equal((uint)VirtioBlock.QueueSize, Driver.Read(RegQueueNumMax)); // QueueSel back to 0
        Assert.Equal(0u, Driver.Read(RegQueueReady));
        Assert.Equal(BlockFeaturesBank0, Driver.Read(RegDeviceFeatures)); // bank 0 again
        // The queue is gone: a kick with a request waiting does nothing.
        _blk.Post(1, VirtioBlock.RequestIn, 0, VirtioBlock.SectorBytes);
        Driver.Kick(0);
        Assert.Equal(1, _blk.Ring.UsedIndex);
        // The driver features are gone: FEATURES_OK without writing them again is refused (no VERSION_1).
        Driver.AddStatus(StatusAcknowledge | StatusDriver);
        Driver.AddStatus(StatusFeaturesOk);
        Assert.Equal(0u, Driver.Status & StatusFeaturesOk);
    }

    [Fact]
    public void Reset_ThenReinitialization_WorksAgain()
    {
        _blk.Start();
        ReadOneSector(0);
        Driver.Reset();

        var ring = _blk.Start();
        ReadOneSector(1, sector: 3);

        Assert.Equal(1, ring.UsedIndex);
        Assert.Equal(VirtioBlock.StatusOk, _blk.Status(1));
        Assert.Equal(_blk.Image.AsSpan(3 * VirtioBlock.SectorBytes, VirtioBlock.SectorBytes).ToArray(),
            _blk.ReadGuest(DataAddress(1, 0), VirtioBlock.SectorBytes));
    }

    [Fact]
    public void QueueRegisters_WrittenAfterQueueReadyAreIgnored()
    {
        Assert.True(Driver.NegotiateFeatures(VirtioFeatures.Version1));
        var ring = _blk.Ring = Driver.SetupQueue(0, 16);
        // A size that is not a power of two and rings outside RAM: applied, they would fail DRIVER_OK.
        Driver.Write(RegQueueSel, 0);
        Driver.Write(RegQueueNum, 3);
        Driver.Write(RegQueueDescHigh, 0x10);
        Driver.Write(RegQueueDriverHigh, 0x10);
        Driver.Write(RegQueueDeviceHigh, 0x10);
        Driver.DriverOk();
        _blk.Post(0, VirtioBlock.RequestIn, 0, VirtioBlock.SectorBytes);
        Driver.Kick(0);

        Assert.Equal(0u, Driver.Status & StatusDeviceNeedsReset);
        Assert.Equal(1, ring.UsedIndex);
        Assert.Equal(VirtioBlock.StatusOk, _blk.Status(0));
    }

    [Fact]
    public void QueueRegisters_IncludingQueueReady_WrittenAfterDriverOkAreIgnored()
    {
        var ring = _blk.Start();
        // Firecracker and the spec's state machine: queue setup belongs between FEATURES_OK and DRIVER_OK.
        Driver.Write(RegQueueSel, 0);
        Driver.Write(RegQueueReady, 0);
        Driver.Write(RegQueueDescHigh, 0x10);
        Driver.Write(RegQueueReady, 1);
        Driver.Write(RegQueueReady, 0);

        Assert.Equal(1u, Driver.Read(RegQueueReady));
        _blk.Post(0, VirtioBlock.RequestIn, 0, VirtioBlock.SectorBytes);
        var error = Record.Exception(() => Driver.Kick(0));
        Assert.Null(error);
        Assert.Equal(0u, Driver.Status & StatusDeviceNeedsReset);
        Assert.Equal(1, ring.UsedIndex);
    }

    [Theory]
    [InlineData(1u)]
    [InlineData(2u)]
    [InlineData(0xffffu)]
    public void QueueNumMax_IsZeroForAQueueTheDeviceDoesNotHave(uint queue)
    {
        Driver.Write(RegQueueSel, queue);
        Assert.Equal(0u, Driver.Read(RegQueueNumMax));
        Assert.Equal(0u, Driver.Read(RegQueueReady));
        Driver.Write(RegQueueSel, 0);
        Assert.Equal((uint)VirtioBlock.QueueSize, Driver.Read(RegQueueNumMax));
    }

    [Fact]
    public void Kick_OfAQueueTheDeviceDoesNotHave_IsIgnored()
    {
        var ring = _blk.Start();
        _blk.Post(0, VirtioBlock.RequestIn, 0, VirtioBlock.SectorBytes);
        Driver.Kick(1);
        Driver.Kick(-1);
        Assert.Equal(0, ring.UsedIndex);
        Assert.Equal(0u, Driver.Status & StatusDeviceNeedsReset);
    }

    [Fact]
    public void InterruptStatus_UsedBufferBitAndLineRaisedAfterUse_ClearedByInterruptAck()
    {
        _blk.Start();
        Assert.Equal(0u, Driver.InterruptStatus);

        ReadOneSector(0);

        Assert.Equal(1, _blk.Interrupt.Triggers);
        Assert.Equal(InterruptUsedBuffer, Driver.InterruptStatus);
        Driver.Write(RegInterruptAck, InterruptUsedBuffer);
        Assert.Equal(0u, Driver.InterruptStatus);
    }

    [Fact]
    public void ConfigSpace_HoldsCapacityInSectorsSegMaxAndBlockSize()
    {
        ulong capacity = BitConverter.ToUInt64(Driver.ReadConfig(0, 8));
        uint segMax = BitConverter.ToUInt32(Driver.ReadConfig(12, 4));
        uint blockSize = BitConverter.ToUInt32(Driver.ReadConfig(20, 4));

        Assert.Equal((ulong)DiskSectors, capacity);
        Assert.Equal(VirtioBlock.QueueSize - 2u, segMax);
        Assert.Equal((uint)VirtioBlock.SectorBytes, blockSize);
        // Config space allows narrow accesses (virtio_cread8), unlike the registers.
        Assert.Equal((byte)DiskSectors, Driver.ReadConfig(0, 1)[0]);
        Assert.Equal(new byte[4], Driver.ReadConfig(24, 4)); // past the end of struct virtio_blk_config
    }

    [Theory]
    [InlineData(RegMagic, 1)]
    [InlineData(RegMagic, 2)]
    [InlineData(RegMagic, 8)]
    [InlineData(RegMagic + 1, 4)]
    [InlineData(RegVersion + 2, 2)]
    public void Registers_ReadsThatAreNot32BitAlignedReturnZero(int offset, int length)
    {
        var data = new byte[length];
        Array.Fill(data, (byte)0xee);
        Driver.Transport.Read((ulong)offset, data);
        Assert.All(data, b => Assert.Equal(0, b));
    }

    [Fact]
    public void Registers_WritesThatAreNot32BitAreIgnored()
    {
        Driver.Transport.Write(RegStatus, [(byte)StatusAcknowledge]);
        Driver.Transport.Write(RegStatus, [(byte)StatusAcknowledge, 0]);
        Driver.Transport.Write(RegStatus + 1, [1, 0, 0, 0]);
        Assert.Equal(0u, Driver.Status);

        var ring = _blk.Start();
        _blk.Post(0, VirtioBlock.RequestIn, 0, VirtioBlock.SectorBytes);
        Driver.Transport.Write(RegQueueNotify, [0, 0]);
        Driver.Transport.Write(RegQueueNotify, [0]);
        Driver.Transport.Write(RegQueueNotify, new byte[8]);
        Assert.Equal(0, ring.UsedIndex);
        Driver.Kick(0);
        Assert.Equal(1, ring.UsedIndex);
    }

    public static TheoryData<string, uint, ulong, ulong, ulong> BadQueueSetups => new()
    {
        { "size not a power of two", 3, 0x10000, 0x11000, 0x12000 },
        { "size zero", 0, 0x10000, 0x11000, 0x12000 },
        { "size above QueueNumMax", 512, 0x10000, 0x11000, 0x12000 },
        { "descriptor table outside RAM", 16, 0x1_0000_0000, 0x11000, 0x12000 },
        { "available ring outside RAM", 16, 0x10000, MemoryBytes, 0x12000 },
        { "used ring running past the end of RAM", 16, 0x10000, 0x11000, MemoryBytes - 0x40 },
        { "descriptor table misaligned", 16, 0x10008, 0x11000, 0x12000 },
        { "used ring misaligned", 16, 0x10000, 0x11000, 0x12002 },
    };

    [Theory]
    [MemberData(nameof(BadQueueSetups))]
    public void DriverOk_WithABadQueueSetup_SetsDeviceNeedsResetAndRaisesAConfigInterrupt(string what, uint size, ulong descriptors, ulong available, ulong used)
    {
        Assert.True(Driver.NegotiateFeatures(VirtioFeatures.Version1), what);
        Driver.SetupQueue(0, size, descriptors, available, used);

        var error = Record.Exception(Driver.DriverOk);

        Assert.Null(error);
        Assert.Equal(StatusDeviceNeedsReset, Driver.Status & StatusDeviceNeedsReset);
        Assert.Equal(InterruptConfigChange, Driver.InterruptStatus & InterruptConfigChange);
        Assert.Equal(1, _blk.Interrupt.Triggers);
        Assert.Contains("invalid queue setup", _blk.Log.ToString());
        Assert.Null(Record.Exception(() => Driver.Kick(0)));
    }

    public enum HostileChain
    {
        HeadOutOfRange,
        LoopThroughNext,
        NextOutOfRange,
        BufferOutsideRam,
        AvailableIndexTooFarAhead,
        ReadableAfterWritable,
        IndirectNotNegotiated,
        NoStatusByte,
        ShortHeader,
    }

    /// <summary>Breaks a rule with descriptors 0..3 and ring entry 0; the ring's free list starts at 4.</summary>
    private void PostHostileChain(SplitRingDriver ring, HostileChain kind)
    {
        const ushort next = VirtqueueDescriptor.FlagNext, write = VirtqueueDescriptor.FlagWrite;
        ulong header = HeaderAddress(0), data = DataAddress(0, 0), status = StatusAddress(0);
        _blk.WriteHeader(header, VirtioBlock.RequestIn, 0);
        switch (kind)
        {
            case HostileChain.HeadOutOfRange:
                ring.Publish(ring.Size);
                return;
            case HostileChain.LoopThroughNext:
                ring.WriteDescriptor(0, header, 16, next, next: 1);
                ring.WriteDescriptor(1, data, 512, (ushort)(next | write), next: 0);
                break;
            case HostileChain.NextOutOfRange:
                ring.WriteDescriptor(0, header, 16, next, next: 200);
                break;
            case HostileChain.BufferOutsideRam:
                ring.WriteDescriptor(0, header, 16, next, next: 1);
                ring.WriteDescriptor(1, MemoryBytes - 256, 512, (ushort)(next | write), next: 2);
                ring.WriteDescriptor(2, status, 1, write);
                break;
            case HostileChain.AvailableIndexTooFarAhead:
                ring.SetAvailableIndex((ushort)(ring.Size + 1));
                return;
            case HostileChain.ReadableAfterWritable:
                ring.WriteDescriptor(0, header, 16, next, next: 1);
                ring.WriteDescriptor(1, status, 1, (ushort)(next | write), next: 2);
                ring.WriteDescriptor(2, data, 512, 0);
                break;
            case HostileChain.IndirectNotNegotiated:
                ring.WriteDescriptor(0, data, 48, VirtqueueDescriptor.FlagIndirect);
                break;
            case HostileChain.NoStatusByte:
                ring.WriteDescriptor(0, header, 16, 0);
                break;
            case HostileChain.ShortHeader:
                ring.WriteDescriptor(0, header, 8, next, next: 1);
                ring.WriteDescriptor(1, status, 1, write);
                break;
        }
        ring.Publish(0);
    }

    [Theory]
    [MemberData(nameof(AllHostileChains))]
    public void Kick_WithAHostileChain_SetsDeviceNeedsResetAndRaisesAConfigInterrupt(HostileChain kind)
    {
        var ring = _blk.Start();

        PostHostileChain(ring, kind);
        var error = Record.Exception(() => Driver.Kick(0));

        Assert.Null(error);
        Assert.Equal(StatusDeviceNeedsReset, Driver.Status & StatusDeviceNeedsReset);
        Assert.Equal(InterruptConfigChange, Driver.InterruptStatus & InterruptConfigChange);
        Assert.Equal(1, _blk.Interrupt.Triggers);
        Assert.Equal(0, ring.UsedIndex);
        Assert.Contains("DEVICE_NEEDS_RESET", _blk.Log.ToString());
    }

    [Theory]
    [MemberData(nameof(AllHostileChains))]
    public void Kick_AfterDeviceNeedsReset_IsIgnoredUntilResetAndReinitialization(HostileChain kind)
    {
        Assert.True(Driver.NegotiateFeatures(VirtioFeatures.Version1));
        var ring = Driver.SetupQueue(0, VirtioBlockHarness.QueueSize, descriptorOrder: Enumerable.Range(4, VirtioBlockHarness.QueueSize - 4).Select(i => (ushort)i));
        Driver.DriverOk();
        PostHostileChain(ring, kind);
        Driver.Kick(0);
        Assert.Equal(StatusDeviceNeedsReset, Driver.Status & StatusDeviceNeedsReset);

        // The driver repairs ring entry 0 into a good request and adds another after it (the device may or
        // may not have consumed the bad chain): a device still running would now serve at least one.
        ring.SetAvailableIndex(0);
        foreach (int slot in new[] { 1, 3 })
        {
            _blk.WriteHeader(HeaderAddress(slot), VirtioBlock.RequestIn, 0);
            _blk.Memory.Write(StatusAddress(slot), StatusNotWritten);
            ring.AddChain(new DriverBuffer(HeaderAddress(slot), 16, false), new DriverBuffer(DataAddress(slot, 0), 512, true),
                new DriverBuffer(StatusAddress(slot), 1, true));
        }
        Driver.Kick(0);
        Assert.Equal(0, ring.UsedIndex);
        Assert.Equal(StatusNotWritten, _blk.Status(1));
        Assert.Equal(StatusNotWritten, _blk.Status(3));

        Driver.Reset();
        Assert.Equal(0u, Driver.Status);
        Assert.Equal(0u, Driver.InterruptStatus);
        var fresh = _blk.Start();
        ReadOneSector(2, sector: 1);
        Assert.Equal(1, fresh.UsedIndex);
        Assert.Equal(VirtioBlock.StatusOk, _blk.Status(2));
    }

    public static TheoryData<HostileChain> AllHostileChains => new(Enum.GetValues<HostileChain>());
}
