using Vmm.Memory;

namespace Vmm.Snapshot;

/// <summary>Guest RAM as a file: the regions one after the other, zero pages left as holes so an
/// idle guest's snapshot costs disk only for the pages it used. <see cref="GuestMemory.MapImage"/> maps it back.</summary>
public static class MemoryImage
{
    public static void Write(GuestMemory memory, string path)
    {
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
        long offset = 0;
        foreach (var region in memory.Regions)
        {
            for (ulong page = 0; page < region.SizeBytes; page += GuestMemoryRegion.PageSize)
            {
                // Runs of non-zero pages are written in one call; zero pages are skipped (holes read as zeros).
                var span = memory.GetSpan(region.GuestAddress + page, GuestMemoryRegion.PageSize);
                if (!span.ContainsAnyExcept((byte)0)) continue;
                ulong runEnd = page + GuestMemoryRegion.PageSize;
                while (runEnd < region.SizeBytes && runEnd - page < (64UL << 20)
                       && memory.GetSpan(region.GuestAddress + runEnd, GuestMemoryRegion.PageSize).ContainsAnyExcept((byte)0))
                    runEnd += GuestMemoryRegion.PageSize;
                file.Position = offset + (long)page;
                file.Write(memory.GetSpan(region.GuestAddress + page, (int)(runEnd - page)));
                page = runEnd - GuestMemoryRegion.PageSize;
            }
            offset += (long)region.SizeBytes;
        }
        file.SetLength(offset);
        file.Flush(flushToDisk: true);
    }
}
