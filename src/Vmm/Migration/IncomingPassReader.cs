using System.Buffers.Binary;
using System.Diagnostics;
using Vmm.Diagnostics;
using Vmm.Memory;

namespace Vmm.Migration;

/// <summary>What each connection of a migration carries while the guest runs on the source: Pages frames, read
/// straight into guest RAM; disk image frames; PassEnd, answered with PassDone once everything before it on this
/// connection is written. One per connection; the RAM, its <see cref="WrittenPageMap"/> and the disk images are
/// shared by all of them (a pass never sends one page or disk block on two connections).</summary>
internal sealed class IncomingPassReader(MigrationChannel channel, int connection, GuestMemory memory, WrittenPageMap written, IncomingDiskImages? disks, Logger log)
{
    private byte[] _buffer = new byte[1 << 20];
    /// <summary>A Pages frame's count and addresses, and the addresses of its pages with data.</summary>
    private readonly byte[] _entries = new byte[4 + MigrationChannel.MaxPagesPerFrame * 8];
    private readonly ulong[] _dataPages = new ulong[MigrationChannel.MaxPagesPerFrame];
    /// <summary>Where the pass under way began, for its breakdown: when, and the channel's times then.</summary>
    private long _passStartedTicks = Stopwatch.GetTimestamp(), _socketTicksAtStart = channel.SocketTicks, _checksumTicksAtStart = channel.ChecksumTicks;

    /// <summary>Takes in <paramref name="frame"/> if it is one of a pass's frames; false, with its payload still
    /// unread, for any other.</summary>
    public bool TryTake(MigrationChannel.FrameHeader frame)
    {
        switch (frame.Type)
        {
            case MigrationFrameType.Pages:
                WritePages(channel.OpenPayload(frame));
                return true;
            case MigrationFrameType.PassEnd:
                var pass = channel.ReceivePayload(frame, ref _buffer);
                // Found by fuzzing: a shorter one made the read below throw, which no filter then caught.
                if (pass.Length != sizeof(int)) throw new MigrationException($"migration stream: a PassEnd frame of {pass.Length} bytes (its pass number takes 4)");
                LogPassTimes(BinaryPrimitives.ReadInt32LittleEndian(pass.Span));
                channel.Send(MigrationFrameType.PassDone, pass.Span);
                channel.Flush();
                return true;
            case MigrationFrameType.DiskData or MigrationFrameType.DiskZero:
                var payload = channel.ReceivePayload(frame, ref _buffer);
                if (disks is null) throw new MigrationException($"migration stream: a {frame.Type} frame, and the Hello said the disks are not copied");
                if (frame.Type == MigrationFrameType.DiskData) disks.WriteData(payload.Span);
                else disks.WriteZero(payload.Span);
                return true;
            default:
                return false;
        }
    }

    /// <summary>Where the pass's time went on this connection (debug log): socket reads are the kernel's copy into guest
    /// RAM and, on a fresh target, the first touch of each page (a fault, and the page zeroed); the rest is this
    /// thread's own work and its waits for the source.</summary>
    private void LogPassTimes(int pass)
    {
        static double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
        long now = Stopwatch.GetTimestamp();
        double socketMs = Ms(channel.SocketTicks - _socketTicksAtStart), checksumMs = Ms(channel.ChecksumTicks - _checksumTicksAtStart), passMs = Ms(now - _passStartedTicks);
        log.Debug($"migration: pass {pass} received on connection {connection} ({channel.BytesReceived >> 20} MiB there so far) in {passMs:F0} ms: " +
                  $"socket reads {socketMs:F0} ms (the kernel's copies, and the first touch of guest RAM), checksums {checksumMs:F0} ms, the rest {passMs - socketMs - checksumMs:F0} ms");
        (_passStartedTicks, _socketTicksAtStart, _checksumTicksAtStart) = (now, channel.SocketTicks, channel.ChecksumTicks);
    }

    /// <summary>Reads a Pages frame straight into guest RAM: the addresses first, then each page's bytes land in
    /// their page, with no buffer in between (a corrupted frame is found at its end, and the whole migration is
    /// discarded then).</summary>
    private void WritePages(MigrationChannel.PayloadReader payload)
    {
        if (payload.Remaining < 4) throw new MigrationException("migration stream: Pages frame without a count");
        payload.Read(_entries.AsSpan(0, 4), "page count");
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(_entries);
        if (count > MigrationChannel.MaxPagesPerFrame) throw new MigrationException($"migration stream: {count} pages in one frame");
        var entries = _entries.AsSpan(0, (int)count * 8);
        payload.Read(entries, "page addresses");
        int dataPages = 0;
        for (int i = 0; i < count; i++)
        {
            ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(entries[(8 * i)..]);
            ulong flags = entry & (MigrationChannel.PageSize - 1);
            ulong address = entry & ~(ulong)(MigrationChannel.PageSize - 1);
            if ((flags & ~MigrationChannel.ZeroPageFlag) != 0)
                throw new MigrationException($"migration stream: page entry 0x{entry:x} has unknown flags");
            var page = memory.GetSpan(address, MigrationChannel.PageSize);
            if ((flags & MigrationChannel.ZeroPageFlag) != 0)
            {
                if (written.Mark(address, written: false)) page.Clear();
                continue;
            }
            _dataPages[dataPages++] = address;
            written.Mark(address, written: true);
        }
        // Each run of adjacent pages is read in one go, straight into guest RAM.
        for (int first = 0; first < dataPages;)
        {
            int run = 1;
            while (first + run < dataPages && _dataPages[first + run] == _dataPages[first] + (ulong)run * MigrationChannel.PageSize
                   && memory.IsRam(_dataPages[first], (ulong)(run + 1) * MigrationChannel.PageSize))
                run++;
            payload.Read(memory.GetSpan(_dataPages[first], run * MigrationChannel.PageSize), "page data");
            first += run;
        }
        payload.Finish();
    }
}
