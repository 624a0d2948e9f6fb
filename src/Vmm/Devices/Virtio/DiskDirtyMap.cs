namespace Vmm.Devices.Virtio;

/// <summary>The blocks of a disk image the guest changed (writes, discards, write-zeroes) while a copy of the
/// image runs, in <see cref="BlockBytes"/> blocks. The device marks a range once the change is in the image,
/// so a copier that takes the marks and then reads the blocks sees every change either in what it reads or in
/// its next take. Marking and taking are lock-free: the device thread never waits for the copier.</summary>
public sealed class DiskDirtyMap
{
    /// <summary>64 KiB: small enough that a 4 KiB write resends little, large enough that a 1 TiB image needs
    /// a 2 MiB map.</summary>
    public const int BlockBytes = 64 << 10;

    private readonly ulong[] _words;

    public DiskDirtyMap(long capacityBytes)
    {
        CapacityBytes = capacityBytes;
        long blocks = (capacityBytes + BlockBytes - 1) / BlockBytes;
        _words = new ulong[(blocks + 63) / 64];
    }

    public long CapacityBytes { get; }

    /// <summary>Marks every block that [offset, offset + length) touches.</summary>
    public void Mark(long offset, long length)
    {
        if (length <= 0 || offset >= CapacityBytes) return;
        long first = offset / BlockBytes, last = (Math.Min(offset + length, CapacityBytes) - 1) / BlockBytes;
        for (long block = first; block <= last; block++)
        {
            ulong bit = 1UL << (int)(block % 64);
            ref ulong word = ref _words[block / 64];
            // Most writes land in blocks already marked: skip the interlocked operation then.
            if ((Volatile.Read(ref word) & bit) == 0) Interlocked.Or(ref word, bit);
        }
    }

    /// <summary>Takes the marks: returns the dirty blocks' indexes in order and clears them.</summary>
    public List<long> Take()
    {
        var blocks = new List<long>();
        for (int i = 0; i < _words.Length; i++)
        {
            if (Volatile.Read(ref _words[i]) == 0) continue;
            ulong word = Interlocked.Exchange(ref _words[i], 0);
            while (word != 0)
            {
                int bit = System.Numerics.BitOperations.TrailingZeroCount(word);
                blocks.Add(i * 64L + bit);
                word &= word - 1;
            }
        }
        return blocks;
    }

    /// <summary>How many blocks are marked now (a snapshot; the device may mark more meanwhile).</summary>
    public long Count()
    {
        long count = 0;
        for (int i = 0; i < _words.Length; i++) count += System.Numerics.BitOperations.PopCount(Volatile.Read(ref _words[i]));
        return count;
    }
}
