using Vmm.Memory;
using Xunit;

namespace Vmm.Tests.Memory;

/// <summary>What a migration's first pass may skip: pages that read as zeros without being read.</summary>
public sealed class PagesThatMayHoldDataTests
{
    private const int Page = GuestMemoryRegion.PageSize;

    private static bool Bit(ulong[] bitmap, int page) => (bitmap[page / 64] & (1UL << (page % 64))) != 0;

    [Fact]
    public void WrittenPagesCount_PagesOnlyReadOrNeverTouchedDoNot()
    {
        using var memory = GuestMemory.Allocate([(0, 1UL << 20)]);
        memory.Write(3 * Page + 100, (byte)7);
        memory.Write(9 * Page, (byte)0); // written, even if with a zero: the page is the guest's own now
        Assert.Equal(0, memory.Read<byte>(5 * Page)); // maps the shared zero page

        ulong[] bitmap = memory.PagesThatMayHoldData(memory.Regions[0]);

        Assert.True(Bit(bitmap, 3));
        Assert.True(Bit(bitmap, 9));
        Assert.False(Bit(bitmap, 5));
        Assert.False(Bit(bitmap, 200));
    }

    [Fact]
    public void RamMappedFromAnImage_CountsEveryPage()
    {
        string image = Path.GetTempFileName();
        try
        {
            byte[] content = new byte[1 << 20];
            content[7 * Page] = 1;
            File.WriteAllBytes(image, content);
            using var memory = GuestMemory.MapImage([(0, 1UL << 20)], image);

            ulong[] bitmap = memory.PagesThatMayHoldData(memory.Regions[0]);

            // Page 7 holds data that no access in this process has brought in yet.
            Assert.All(Enumerable.Range(0, 256), page => Assert.True(Bit(bitmap, page)));
        }
        finally
        {
            File.Delete(image);
        }
    }
}
