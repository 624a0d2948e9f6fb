using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Vmm.Kvm;
using Vmm.Kvm.Interop;
using Vmm.Memory;

namespace Vmm.Devices.Virtio;

/// <summary>virtio-blk over a raw image file or a host block device (virtio 1.2, section 5.2): read, write, flush
/// (fdatasync), discard, write-zeroes and get-ID, one request queue. Data moves straight between the file and the guest's buffers. A
/// write completes only once the host kernel has it, a flush once it is on stable storage; a read-only
/// disk answers writes with IOERR.</summary>
public sealed class VirtioBlock : IVirtioDevice, IDisposable
{
    public const int SectorBytes = 512;
    public const ushort QueueSize = 256;

    // Feature bits (5.2.3).
    public const ulong FeatureSegMax = 1UL << 2, FeatureReadOnly = 1UL << 5, FeatureBlockSize = 1UL << 6, FeatureFlush = 1UL << 9;
    public const ulong FeatureDiscard = 1UL << 13, FeatureWriteZeroes = 1UL << 14;

    // Request types and status values (5.2.6).
    public const uint RequestIn = 0, RequestOut = 1, RequestFlush = 4, RequestGetId = 8, RequestDiscard = 11, RequestWriteZeroes = 13;
    public const byte StatusOk = 0, StatusIoError = 1, StatusUnsupported = 2;
    private const int RequestHeaderBytes = 16;
    /// <summary>struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags.</summary>
    private const int RangeBytes = 16;
    private const uint MaxRangeSectors = 1u << 22, MaxRanges = 16;
    private const uint RangeFlagUnmap = 1;

    private readonly SafeFileHandle _file;
    /// <summary>The disk is a host block device (a loop device, an LVM volume, DRBD), not an image file.</summary>
    private readonly bool _isBlockDevice;
    private readonly byte[] _id;
    private VirtioActivation? _activation;
    /// <summary>Set while a copy of the image runs (storage migration): what the guest changes is marked.</summary>
    private volatile DiskDirtyMap? _dirtyMap;

    /// <param name="openAt">Where the image is opened when not at its path: an incoming migration writes the
    /// image into an unnamed file that gets the path only once it is complete.</param>
    public VirtioBlock(BlockDiskConfig config, string? openAt = null)
    {
        Config = config;
        try
        {
            if (Directory.Exists(config.Path)) throw new ConfigurationException($"--disk {config.Path} is a directory, not a disk image");
            _file = File.OpenHandle(openAt ?? config.Path, FileMode.Open, config.ReadOnly ? FileAccess.Read : FileAccess.ReadWrite);
        }
        catch (FileNotFoundException) { throw new ConfigurationException($"--disk {config.Path} does not exist"); }
        catch (DirectoryNotFoundException) { throw new ConfigurationException($"--disk {config.Path} does not exist"); }
        catch (UnauthorizedAccessException) { throw new ConfigurationException($"--disk {config.Path} cannot be opened {(config.ReadOnly ? "for reading" : "for writing (add ,ro for a read-only disk)")}: permission denied"); }
        catch (IOException e) { throw new ConfigurationException($"--disk {config.Path} cannot be opened: {e.Message}", e); }
        long length;
        try
        {
            // A block device's inode says 0 bytes: its size is the device's own.
            long fileBytes = RandomAccess.GetLength(_file);
            long? deviceBytes = fileBytes > 0 ? null : BlockDevice.SizeBytes(_file);
            _isBlockDevice = deviceBytes is not null;
            length = deviceBytes ?? fileBytes;
        }
        catch (PosixException e)
        {
            _file.Dispose();
            throw new ConfigurationException($"--disk {config.Path}: its size cannot be read: {e.Message}", e);
        }
        if (length == 0 || length % SectorBytes != 0)
        {
            _file.Dispose();
            throw new ConfigurationException(length == 0
                ? $"--disk {config.Path} is empty (0 bytes): a disk needs at least one {SectorBytes}-byte sector"
                : $"--disk {config.Path} is {length} bytes, not a multiple of {SectorBytes}: a raw disk image holds whole sectors");
        }
        CapacityBytes = length;
        _id = Encoding.UTF8.GetBytes(config.Id ?? Path.GetFileName(config.Path));
        Array.Resize(ref _id, Math.Min(_id.Length, BlockDiskConfig.MaxIdBytes));
    }

    public BlockDiskConfig Config { get; }
    public long CapacityBytes { get; }

    public VirtioDeviceType Type => VirtioDeviceType.Block;

    public ulong OfferedFeatures =>
        VirtioFeatures.Common | FeatureSegMax | FeatureBlockSize | FeatureFlush
        | (Config.ReadOnly ? FeatureReadOnly : FeatureDiscard | FeatureWriteZeroes);

    public IReadOnlyList<ushort> QueueMaxSizes { get; } = [QueueSize];

    /// <summary>struct virtio_blk_config: capacity (sectors) at 0, seg_max at 12, blk_size at 20, the
    /// discard limits at 36-47 and the write-zeroes limits at 48-56.</summary>
    public void ReadConfig(int offset, Span<byte> data)
    {
        Span<byte> config = stackalloc byte[60];
        config.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(config, (ulong)(CapacityBytes / SectorBytes));
        BinaryPrimitives.WriteUInt32LittleEndian(config[12..], QueueSize - 2);
        BinaryPrimitives.WriteUInt32LittleEndian(config[20..], SectorBytes);
        BinaryPrimitives.WriteUInt32LittleEndian(config[36..], MaxRangeSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(config[40..], MaxRanges);
        BinaryPrimitives.WriteUInt32LittleEndian(config[44..], 1);
        BinaryPrimitives.WriteUInt32LittleEndian(config[48..], MaxRangeSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(config[52..], MaxRanges);
        config[56] = 1; // write_zeroes_may_unmap: zeroing may free the blocks (a hole reads as zeros)
        VirtioConfigSpace.Read(config, offset, data);
    }

    public void WriteConfig(int offset, ReadOnlySpan<byte> data) { }

    public void Activate(VirtioActivation activation) => _activation = activation;

    public void Reset() => _activation = null;

    public void ProcessQueue(int index)
    {
        if (_activation is not { } active || active.Queues[index] is not { } queue) return;
        GuestMemory memory = active.Memory;
        // Drain, then ask for the next kick (avail_event, with EVENT_IDX) and drain again if buffers
        // arrived meanwhile: without it an EVENT_IDX driver would stop kicking.
        do
        {
            while (queue.TryPopChain(memory, out var chain))
            {
                uint written = Execute(memory, chain);
                queue.AddUsed(memory, chain.HeadIndex, written);
            }
        }
        while (queue.EnableNotifications(memory));
        if (queue.ShouldNotify(memory)) active.SignalUsedBuffers();
    }

    /// <summary>Runs one request; returns the bytes written into the guest's buffers, status included.</summary>
    private uint Execute(GuestMemory memory, DescriptorChain chain)
    {
        if (chain.ReadableBytes < RequestHeaderBytes || chain.WritableBytes < 1)
            throw new VirtqueueException($"block request without a 16-byte header and a status byte (readable {chain.ReadableBytes}, writable {chain.WritableBytes})");
        Span<byte> header = stackalloc byte[RequestHeaderBytes];
        chain.Read(memory, 0, header);
        uint type = BinaryPrimitives.ReadUInt32LittleEndian(header);
        ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
        long statusOffset = chain.WritableBytes - 1;
        long dataWritten = 0;
        byte status;
        switch (type)
        {
            case RequestIn:
                status = Transfer(memory, chain.WritableSpan, 0, statusOffset, sector, toGuest: true);
                if (status == StatusOk) dataWritten = statusOffset;
                break;
            case RequestOut:
                if (Config.ReadOnly)
                {
                    status = StatusIoError;
                    break;
                }
                long length = chain.ReadableBytes - RequestHeaderBytes;
                status = Transfer(memory, chain.ReadableSpan, RequestHeaderBytes, length, sector, toGuest: false);
                // Marked after the write, failed or not: a failed one may still have changed part of the range.
                if (sector <= long.MaxValue / SectorBytes) _dirtyMap?.Mark((long)sector * SectorBytes, length);
                break;
            case RequestFlush:
                status = Config.ReadOnly || Libc.FdataSync((int)_file.DangerousGetHandle()) == 0 ? StatusOk : StatusIoError;
                break;
            case RequestDiscard or RequestWriteZeroes:
                status = Config.ReadOnly ? StatusIoError : ZeroRanges(memory, chain, discard: type == RequestDiscard);
                break;
            case RequestGetId:
                dataWritten = chain.Write(memory, 0, _id.AsSpan(0, (int)Math.Min(_id.Length, statusOffset)));
                if (dataWritten < statusOffset && dataWritten < BlockDiskConfig.MaxIdBytes)
                    dataWritten += chain.Write(memory, dataWritten, new byte[1]); // NUL-terminate a short ID
                status = StatusOk;
                break;
            default:
                status = StatusUnsupported;
                break;
        }
        chain.Write(memory, statusOffset, [status]);
        return (uint)(dataWritten + 1);
    }

    /// <summary>DISCARD punches holes; WRITE_ZEROES makes the ranges read as zeros, freeing the blocks when
    /// the guest allows it (unmap) and the file system can. Both are fallocate on the image.</summary>
    private byte ZeroRanges(GuestMemory memory, DescriptorChain chain, bool discard)
    {
        long payload = chain.ReadableBytes - RequestHeaderBytes;
        if (payload <= 0 || payload % RangeBytes != 0 || payload / RangeBytes > MaxRanges) return StatusUnsupported;
        Span<byte> range = stackalloc byte[RangeBytes];
        for (long offset = RequestHeaderBytes; offset < chain.ReadableBytes; offset += RangeBytes)
        {
            chain.Read(memory, offset, range);
            ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(range);
            uint sectors = BinaryPrimitives.ReadUInt32LittleEndian(range[8..]);
            uint flags = BinaryPrimitives.ReadUInt32LittleEndian(range[12..]);
            if (sectors > MaxRangeSectors || sector > (ulong)(CapacityBytes / SectorBytes)
                || (long)sector * SectorBytes > CapacityBytes - (long)sectors * SectorBytes)
                return StatusIoError;
            if ((flags & ~RangeFlagUnmap) != 0 || (discard && flags != 0)) return StatusUnsupported;
            long start = (long)sector * SectorBytes, length = (long)sectors * SectorBytes;
            int fd = (int)_file.DangerousGetHandle();
            // On a block device a discard is BLKDISCARD, passed down to what is below (thin LVM, an SSD, DRBD's peer):
            // fallocate there zeroes the range instead of freeing it.
            bool done = discard && _isBlockDevice ? BlockDevice.Discard(_file, start, length)
                : discard || (flags & RangeFlagUnmap) != 0
                ? Libc.Fallocate(fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, start, length) == 0
                : Libc.Fallocate(fd, Libc.FALLOC_FL_ZERO_RANGE | Libc.FALLOC_FL_KEEP_SIZE, start, length) == 0;
            // A discard is advice: a file system that cannot punch holes just keeps the data. Zeroes must land.
            bool zeroed = done || discard || WriteZeroes(start, length);
            _dirtyMap?.Mark(start, length);
            if (!zeroed) return StatusIoError;
        }
        return StatusOk;
    }

    private bool WriteZeroes(long start, long length)
    {
        byte[] zeros = new byte[Math.Min(length, 1 << 20)];
        try
        {
            for (long done = 0; done < length; done += zeros.Length)
                RandomAccess.Write(_file, zeros.AsSpan(0, (int)Math.Min(zeros.Length, length - done)), start + done);
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Moves <paramref name="length"/> bytes between the disk at <paramref name="sector"/> and the
    /// chain's segments, starting <paramref name="skip"/> bytes into them.</summary>
    private byte Transfer(GuestMemory memory, ReadOnlySpan<DescriptorSegment> segments, long skip, long length, ulong sector, bool toGuest)
    {
        if (sector > (ulong)(CapacityBytes / SectorBytes) || (long)sector * SectorBytes > CapacityBytes - length)
            return StatusIoError;
        long fileOffset = (long)sector * SectorBytes;
        try
        {
            foreach (var segment in segments)
            {
                if (length == 0) break;
                if (skip >= segment.Length)
                {
                    skip -= segment.Length;
                    continue;
                }
                ulong address = segment.Address + (ulong)skip;
                long count = Math.Min(segment.Length - skip, length);
                skip = 0;
                while (count > 0)
                {
                    int chunk = (int)Math.Min(count, 1 << 30);
                    Span<byte> buffer = memory.GetSpan(address, chunk);
                    if (toGuest)
                    {
                        ReadFully(buffer, fileOffset);
                        memory.MarkDirty(address, (ulong)chunk);
                    }
                    else
                    {
                        RandomAccess.Write(_file, buffer, fileOffset);
                    }
                    address += (ulong)chunk;
                    fileOffset += chunk;
                    count -= chunk;
                    length -= chunk;
                }
            }
            return StatusOk;
        }
        catch (IOException)
        {
            return StatusIoError;
        }
    }

    private void ReadFully(Span<byte> buffer, long fileOffset)
    {
        while (!buffer.IsEmpty)
        {
            int read = RandomAccess.Read(_file, buffer, fileOffset);
            if (read == 0)
            {
                // The image shrank under us: what is past its end reads as zeros.
                buffer.Clear();
                return;
            }
            buffer = buffer[read..];
            fileOffset += read;
        }
    }

    /// <summary>Starts marking what the guest changes in the image, for a copy of it.</summary>
    public DiskDirtyMap StartDirtyTracking()
    {
        var map = new DiskDirtyMap(CapacityBytes);
        _dirtyMap = map;
        return map;
    }

    public void StopDirtyTracking(DiskDirtyMap map) => Interlocked.CompareExchange(ref _dirtyMap, null, map);

    /// <summary>The next extent of the image at or after <paramref name="from"/> that holds data (SEEK_DATA,
    /// SEEK_HOLE), or null when only a hole follows. Where the file system cannot say, all of it is data.</summary>
    public (long Start, long End)? NextDataExtent(long from)
    {
        if (from >= CapacityBytes) return null;
        int fd = (int)_file.DangerousGetHandle();
        long start = Libc.Lseek(fd, from, Libc.SEEK_DATA);
        if (start < 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (errno == Libc.ENXIO) return null;
            return (from, CapacityBytes);
        }
        if (start >= CapacityBytes) return null;
        long end = Libc.Lseek(fd, start, Libc.SEEK_HOLE);
        return (start, end < 0 ? CapacityBytes : Math.Min(end, CapacityBytes));
    }

    /// <summary>Reads the image (for a copy of it); past its end reads as zeros.</summary>
    public void ReadImage(long offset, Span<byte> buffer)
    {
        try
        {
            ReadFully(buffer, offset);
        }
        catch (IOException e)
        {
            throw new DiskImageException($"cannot read the disk image {Config.Path}: {e.Message}", e);
        }
    }

    /// <summary>Makes every write the guest completed durable in the image: before another host (shared
    /// storage) or a restored snapshot opens it, nothing may stay in this host's page cache only.</summary>
    public void FlushToStorage()
    {
        if (!Config.ReadOnly && Libc.FdataSync((int)_file.DangerousGetHandle()) != 0)
            throw PosixException.FromLastError("fdatasync", $"cannot flush the disk image {Config.Path}");
    }

    public void Dispose() => _file.Dispose();
}
