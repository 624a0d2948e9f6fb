using Vmm.Memory;

namespace Vmm.Migration;

/// <summary>Which pages of the incoming RAM hold data. RAM here starts zeroed, so a zero page is cleared only
/// where an earlier pass wrote data: clearing a page never written would only allocate it. The connections of one
/// migration mark different pages within a pass, but 64 pages share a word, so each mark is atomic on its word.</summary>
internal sealed class WrittenPageMap(GuestMemory memory)
{
    private readonly ulong[][] _words = memory.Regions.Select(r => new ulong[(r.SizeBytes / GuestMemoryRegion.PageSize + 63) / 64]).ToArray();

    /// <summary>Records whether the page now holds data; returns whether it held data before.</summary>
    public bool Mark(ulong address, bool written)
    {
        for (int i = 0; i < memory.Regions.Count; i++)
        {
            var region = memory.Regions[i];
            if (!region.Contains(address, GuestMemoryRegion.PageSize)) continue;
            ulong page = (address - region.GuestAddress) / GuestMemoryRegion.PageSize;
            ref ulong word = ref _words[i][page / 64];
            ulong bit = 1UL << (int)(page % 64);
            ulong before = written ? Interlocked.Or(ref word, bit) : Interlocked.And(ref word, ~bit);
            return (before & bit) != 0;
        }
        return false;
    }
}
