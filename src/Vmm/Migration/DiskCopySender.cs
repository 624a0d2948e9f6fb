using System.Buffers.Binary;
using Vmm.Devices.Virtio;

namespace Vmm.Migration;

/// <summary>The source side of a storage migration: the disk images travel in the stream while the guest runs.
/// A first pass sends every extent that holds data (holes stay holes on the target, and so do runs of zeros);
/// each later pass sends the blocks the guest changed since the previous one took them (writes, discards,
/// write-zeroes), a block that now reads as zeros as a hole to punch. Read-only disks are sent once.</summary>
internal sealed class DiskCopySender : IDisposable
{
    private readonly IReadOnlyList<VirtioBlock> _disks;
    /// <summary>Per disk, its dirty map; null for a read-only disk (the guest cannot change it).</summary>
    private readonly DiskDirtyMap?[] _maps;
    private readonly List<long>[] _pending;

    /// <summary>Starts tracking what the guest changes: anything changed from here on is sent again.</summary>
    public DiskCopySender(IReadOnlyList<VirtioBlock> disks)
    {
        _disks = disks;
        _maps = disks.Select(d => d.Config.ReadOnly ? null : d.StartDirtyTracking()).ToArray();
        _pending = disks.Select(_ => new List<long>()).ToArray();
    }

    public IReadOnlyList<long> ImageBytes => _disks.Select(d => d.CapacityBytes).ToArray();

    /// <summary>Image bytes sent so far (data, not holes).</summary>
    public long BytesSent { get; private set; }

    /// <summary>Sends every data extent of every image; returns the image bytes sent. With a <see cref="FrameWriter"/>,
    /// reading the next range overlaps sending the one before; the caller drains it.</summary>
    public long SendAllocated(IFrameSink writer)
    {
        long before = BytesSent;
        for (int disk = 0; disk < _disks.Count; disk++)
        {
            for (long at = 0; _disks[disk].NextDataExtent(at) is var (start, end); at = end)
            {
                for (long offset = start; offset < end; offset += MigrationChannel.MaxDiskDataBytes)
                    SendRange(writer, disk, offset, (int)Math.Min(MigrationChannel.MaxDiskDataBytes, end - offset), zeroAsHole: false);
            }
        }
        return BytesSent - before;
    }

    /// <summary>Takes the blocks changed since the last take into what the next <see cref="SendPending"/>
    /// sends; returns how many bytes that is now.</summary>
    public long CollectDirty()
    {
        for (int disk = 0; disk < _disks.Count; disk++)
            if (_maps[disk] is { } map)
            {
                var merged = new SortedSet<long>(_pending[disk]);
                merged.UnionWith(map.Take());
                _pending[disk] = [.. merged];
            }
        return PendingBytes;
    }

    public long PendingBytes => _pending.Sum(blocks => (long)blocks.Count) * DiskDirtyMap.BlockBytes;

    /// <summary>Sends the collected blocks, contiguous ones together; returns the image bytes sent (the caller
    /// drains a <see cref="FrameWriter"/>).</summary>
    public long SendPending(IFrameSink writer)
    {
        long before = BytesSent;
        const int blocksPerFrame = MigrationChannel.MaxDiskDataBytes / DiskDirtyMap.BlockBytes;
        for (int disk = 0; disk < _disks.Count; disk++)
        {
            var blocks = _pending[disk];
            for (int i = 0; i < blocks.Count;)
            {
                int run = 1;
                while (i + run < blocks.Count && run < blocksPerFrame && blocks[i + run] == blocks[i] + run) run++;
                long offset = blocks[i] * DiskDirtyMap.BlockBytes;
                int length = (int)Math.Min((long)run * DiskDirtyMap.BlockBytes, _disks[disk].CapacityBytes - offset);
                SendRange(writer, disk, offset, length, zeroAsHole: true);
                i += run;
            }
            blocks.Clear();
        }
        return BytesSent - before;
    }

    /// <summary>Reads one range and sends it: as data, or, when it reads as zeros, as a hole to punch (a later
    /// pass: the target may hold old data there) or as nothing at all (the first pass: the target's image
    /// starts as one hole).</summary>
    private void SendRange(IFrameSink writer, int disk, long offset, int length, bool zeroAsHole)
    {
        byte[] frame = writer.Rent();
        var data = frame.AsSpan(FrameWriter.DataOffset, length);
        _disks[disk].ReadImage(offset, data);
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)disk);
        BinaryPrimitives.WriteInt64LittleEndian(frame.AsSpan(4), offset);
        if (data.ContainsAnyExcept((byte)0))
        {
            writer.Submit(MigrationFrameType.DiskData, frame, MigrationChannel.DiskDataHeaderBytes, length);
            BytesSent += length;
        }
        else if (zeroAsHole)
        {
            BinaryPrimitives.WriteInt64LittleEndian(frame.AsSpan(12), length);
            writer.Submit(MigrationFrameType.DiskZero, frame, 20, 0);
        }
        else
        {
            writer.Return(frame);
        }
    }

    public void Dispose()
    {
        for (int disk = 0; disk < _disks.Count; disk++)
            if (_maps[disk] is { } map) _disks[disk].StopDirtyTracking(map);
    }
}
