using System.Numerics;

namespace Vmm.Memory;

/// <summary>A set of guest pages, one bitmap per RAM region.</summary>
internal sealed class DirtyPages(GuestMemory memory, ulong[][] bitmaps)
{
    public long Count => bitmaps.Sum(b => b.Sum(w => (long)BitOperations.PopCount(w)));

    /// <summary>What a first pass must send: every page that may hold data (the target's RAM starts zeroed).</summary>
    public static DirtyPages MayHoldData(GuestMemory memory) => new(memory, memory.Regions.Select(memory.PagesThatMayHoldData).ToArray());

    public void UnionWith(DirtyPages other)
    {
        for (int i = 0; i < bitmaps.Length; i++)
            for (int w = 0; w < bitmaps[i].Length; w++) bitmaps[i][w] |= other.Bitmaps[i][w];
    }

    internal ulong[][] Bitmaps => bitmaps;

    /// <summary>The guest physical address of every page in the set, region by region, in order.</summary>
    public IEnumerable<ulong> Addresses()
    {
        for (int i = 0; i < bitmaps.Length; i++)
        {
            ulong baseAddress = memory.Regions[i].GuestAddress;
            for (int w = 0; w < bitmaps[i].Length; w++)
            {
                ulong word = bitmaps[i][w];
                while (word != 0)
                {
                    int bit = BitOperations.TrailingZeroCount(word);
                    word &= word - 1;
                    yield return baseAddress + ((ulong)w * 64 + (ulong)bit) * GuestMemoryRegion.PageSize;
                }
            }
        }
    }
}
