using System.Buffers.Binary;
using Vmm.Memory;
using Vmm.Migration;

namespace Vmm.Replication;

/// <summary>A standby's view of a whole Pages frame (count, addresses, then the data of each page that has data):
/// checked when it arrives, written into RAM only when its epoch commits, so that applying cannot fail half way.</summary>
internal static class PagesFrames
{
    public static void Check(GuestMemory memory, ReadOnlySpan<byte> payload)
    {
        if (payload.Length < 4) throw new MigrationException("migration stream: Pages frame without a count");
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        if (count > MigrationChannel.MaxPagesPerFrame || payload.Length < 4 + 8 * (int)count)
            throw new MigrationException($"migration stream: a Pages frame of {payload.Length} bytes claims {count} pages");
        int dataPages = 0;
        for (int i = 0; i < count; i++)
        {
            ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(payload[(4 + 8 * i)..]);
            ulong flags = entry & (MigrationChannel.PageSize - 1);
            if ((flags & ~MigrationChannel.ZeroPageFlag) != 0) throw new MigrationException($"migration stream: page entry 0x{entry:x} has unknown flags");
            ulong address = entry & ~(ulong)(MigrationChannel.PageSize - 1);
            if (!memory.IsRam(address, MigrationChannel.PageSize)) throw new MigrationException($"migration stream: page 0x{address:x} is not inside guest RAM");
            if (flags == 0) dataPages++;
        }
        if (payload.Length != 4 + 8 * (int)count + dataPages * MigrationChannel.PageSize)
            throw new MigrationException($"migration stream: a Pages frame of {payload.Length} bytes for {count} pages, {dataPages} with data");
    }

    /// <summary>Writes a frame that passed <see cref="Check"/> into RAM.</summary>
    public static void Apply(GuestMemory memory, ReadOnlySpan<byte> payload)
    {
        int count = (int)BinaryPrimitives.ReadUInt32LittleEndian(payload);
        var data = payload[(4 + 8 * count)..];
        for (int i = 0; i < count; i++)
        {
            ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(payload[(4 + 8 * i)..]);
            var page = memory.GetSpan(entry & ~(ulong)(MigrationChannel.PageSize - 1), MigrationChannel.PageSize);
            if ((entry & MigrationChannel.ZeroPageFlag) != 0)
            {
                page.Clear();
                continue;
            }
            data[..MigrationChannel.PageSize].CopyTo(page);
            data = data[MigrationChannel.PageSize..];
        }
    }
}
