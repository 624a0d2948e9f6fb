using System.Buffers.Binary;
using Vmm.Memory;

namespace Vmm.Migration;

/// <summary>Builds Pages frames of guest RAM: up to <see cref="MigrationChannel.MaxPagesPerFrame"/> pages each, an
/// all-zero page as its address alone.</summary>
internal static class PageFrames
{
    /// <summary>Builds a frame for every page of <paramref name="pages"/> into <paramref name="sink"/>; returns the
    /// pages and how many of them were zero.</summary>
    public static (long Pages, long ZeroPages) Build(IFrameSink sink, GuestMemory memory, DirtyPages pages)
    {
        long sent = 0, zero = 0;
        int count = 0, data = 0;
        byte[]? frame = null;
        foreach (ulong address in pages.Addresses())
        {
            frame ??= sink.Rent();
            var page = memory.GetSpan(address, MigrationChannel.PageSize);
            bool hasData = page.ContainsAnyExcept((byte)0);
            BinaryPrimitives.WriteUInt64LittleEndian(frame.AsSpan(4 + 8 * count), hasData ? address : address | MigrationChannel.ZeroPageFlag);
            if (hasData)
            {
                page.CopyTo(frame.AsSpan(FrameWriter.DataOffset + data));
                data += MigrationChannel.PageSize;
            }
            else
            {
                zero++;
            }
            sent++;
            if (++count == MigrationChannel.MaxPagesPerFrame)
            {
                Submit(sink, frame, count, data);
                frame = null;
                count = 0;
                data = 0;
            }
        }
        if (count > 0) Submit(sink, frame!, count, data);
        return (sent, zero);
    }

    private static void Submit(IFrameSink sink, byte[] frame, int count, int dataLength)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)count);
        sink.Submit(MigrationFrameType.Pages, frame, 4 + 8 * count, dataLength);
    }
}
