using System.Buffers.Binary;
using System.Text;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Serialization;
using Vmm.State;

namespace Vmm.Migration;

/// <summary>The target side of one migration: reads the stream, builds the machine it describes, fills its
/// RAM (and, in a storage migration, its disk images: <see cref="IncomingDiskImages"/>) and restores its state.
/// Everything read is checked (magic, version, frame lengths and checksums, page addresses inside RAM, disk
/// ranges inside their images, frame order); on any failure (a bug included) the half-built machine and any
/// partial image are discarded, the source is told why, and a <see cref="MigrationException"/> says it to the
/// caller.</summary>
public sealed class MigrationReceiver
{
    private readonly MigrationChannel _channel;
    private readonly Logger _log;
    private readonly string? _diskDirectory;
    private byte[] _buffer = new byte[1 << 20];
    private ulong[][]? _written;
    /// <summary>A Pages frame's count and addresses, and the addresses of its pages with data.</summary>
    private readonly byte[] _entries = new byte[4 + MigrationChannel.MaxPagesPerFrame * 8];
    private readonly ulong[] _dataPages = new ulong[MigrationChannel.MaxPagesPerFrame];
    private IncomingDiskImages? _disks;

    /// <param name="diskDirectory">Where copied disk images are written; null: this target takes only VMs whose
    /// disks sit on shared storage.</param>
    public MigrationReceiver(Stream stream, Logger log, string? diskDirectory = null)
    {
        _channel = new MigrationChannel(stream);
        _log = log;
        _diskDirectory = diskDirectory;
    }

    public long BytesReceived => _channel.BytesReceived;

    /// <summary>Receives a VM, built from the source's description alone (its disks, if any, on shared storage).</summary>
    public T Receive<T>(Func<MachineDescription, T> build) where T : IMigrationDestination => Receive((IncomingMachine incoming) => build(incoming.Description));

    /// <summary>Receives a VM: <paramref name="build"/> makes the destination (with zeroed RAM) from what the
    /// source said it is, or refuses it (a CPUID this host cannot offer, a disk outside the allowed directories). Returns it restored and ready to run; the caller starts it and then calls
    /// <see cref="ConfirmResumed"/>.</summary>
    public T Receive<T>(Func<IncomingMachine, T> build) where T : IMigrationDestination
    {
        T? machine = default;
        try
        {
            var hello = ReadHello();
            if (hello.Replication) throw new MigrationException("the source replicates its VM to a standby, and this is a migration target (replication goes to 'vmm standby')");
            var description = hello.Description;
            if (hello.CopiedDiskBytes is { } diskBytes)
            {
                if (_diskDirectory is null)
                    throw new MigrationException("the source copies the VM's disk images, and this target has no directory for them (start vmm migrate-receive with --disk-dir DIR)");
                _disks = IncomingDiskImages.Create(_diskDirectory, description.Disks, diskBytes);
                description = description with { Disks = description.Disks.Select((d, i) => d with { Path = _disks.FinalPaths[i] }).ToArray() };
            }
            machine = build(new IncomingMachine(hello.Name, description, _disks?.OpenPaths));
            _channel.Send(MigrationFrameType.Ready, []);
            _channel.Flush();
            _written = machine.Memory.Regions.Select(r => new ulong[(r.SizeBytes / GuestMemoryRegion.PageSize + 63) / 64]).ToArray();
            while (true)
            {
                var frame = _channel.ReceiveHeader();
                if (frame.Type == MigrationFrameType.Pages)
                {
                    WritePages(machine.Memory, _channel.OpenPayload(frame));
                    continue;
                }
                var type = frame.Type;
                var payload = _channel.ReceivePayload(frame, ref _buffer);
                switch (type)
                {
                    case MigrationFrameType.PassEnd:
                        // Found by fuzzing: a shorter one made the read below throw, which no filter then caught.
                        if (payload.Length != sizeof(int)) throw new MigrationException($"migration stream: a PassEnd frame of {payload.Length} bytes (its pass number takes 4)");
                        _log.Debug($"migration: pass {BinaryPrimitives.ReadInt32LittleEndian(payload.Span)} received ({_channel.BytesReceived >> 20} MiB so far)");
                        _channel.Send(MigrationFrameType.PassDone, payload.Span);
                        _channel.Flush();
                        break;
                    case MigrationFrameType.DiskData or MigrationFrameType.DiskZero:
                        if (_disks is null) throw new MigrationException($"migration stream: a {type} frame, and the Hello said the disks are not copied");
                        if (type == MigrationFrameType.DiskData) _disks.WriteData(payload.Span);
                        else _disks.WriteZero(payload.Span);
                        break;
                    case MigrationFrameType.State:
                        var restoring = System.Diagnostics.Stopwatch.StartNew();
                        var state = MachineState.FromBytes(payload.ToArray());
                        if (_disks is not null)
                        {
                            // The state names the source's image paths; the VM runs here on the copies.
                            if (!state.Description.SameAs(hello.Description))
                                throw new StateFormatException("the saved state describes a different machine than the Hello did");
                            state = state.WithDescription(description);
                            _disks.Commit();
                            _log.Debug($"migration: disk images durable at {string.Join(", ", _disks.FinalPaths)} in {restoring.Elapsed.TotalMilliseconds:F1} ms");
                        }
                        machine.Restore(state);
                        _log.Debug($"migration: state restored in {restoring.Elapsed.TotalMilliseconds:F1} ms");
                        return machine;
                    case MigrationFrameType.Abort:
                        throw new MigrationException($"the source gave up: {Encoding.UTF8.GetString(payload.Span)}");
                    default:
                        throw new MigrationException($"migration stream: unexpected {type} frame");
                }
            }
        }
        catch (Exception e)
        {
            machine?.Dispose();
            _disks?.Dispose();
            string why = e is VmmException ? e.Message : $"internal error in vmm: {e}";
            TryTellSource(e is VmmException ? e.Message : "internal error in vmm (see the target's log)");
            throw e as MigrationException ?? new MigrationException(why, e);
        }
    }

    /// <summary>Tells the source the VM runs here; if that fails the source will resume it, so the caller
    /// must stop this copy (and its copied disk images are removed: the VM goes on with its own, there).</summary>
    public void ConfirmResumed()
    {
        try
        {
            _channel.Send(MigrationFrameType.Resumed, []);
            _channel.Flush();
            _disks?.Keep();
        }
        finally
        {
            _disks?.Dispose();
        }
    }

    private MigrationHello ReadHello() => ReadHello(_channel, ref _buffer);

    /// <summary>The first frame of a stream, a migration's or a replication's.</summary>
    internal static MigrationHello ReadHello(MigrationChannel channel, ref byte[] buffer)
    {
        var (type, payload) = channel.Receive(ref buffer);
        // A TLS source that refused this target's certificate says so in place of its Hello.
        if (type == MigrationFrameType.Abort) throw new MigrationException($"the source gave up: {Encoding.UTF8.GetString(payload.Span)}");
        if (type != MigrationFrameType.Hello) throw new MigrationException($"migration stream: expected a Hello frame, got {type}");
        return MigrationHello.Read(payload.ToArray());
    }

    /// <summary>Reads a Pages frame straight into guest RAM: the addresses first, then each page's bytes land in
    /// their page, with no buffer in between (a corrupted frame is found at its end, and the whole migration is
    /// discarded then).</summary>
    private void WritePages(GuestMemory memory, MigrationChannel.PayloadReader payload)
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
                // RAM here starts zeroed: clearing a page never written would only allocate it.
                if (MarkWritten(memory, address, written: false)) page.Clear();
                continue;
            }
            _dataPages[dataPages++] = address;
            MarkWritten(memory, address, written: true);
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

    /// <summary>Records whether the page now holds data; returns whether it held data before.</summary>
    private bool MarkWritten(GuestMemory memory, ulong address, bool written)
    {
        for (int i = 0; i < memory.Regions.Count; i++)
        {
            var region = memory.Regions[i];
            if (!region.Contains(address, MigrationChannel.PageSize)) continue;
            ulong page = (address - region.GuestAddress) / GuestMemoryRegion.PageSize;
            ref ulong word = ref _written![i][page / 64];
            ulong bit = 1UL << (int)(page % 64);
            bool before = (word & bit) != 0;
            word = written ? word | bit : word & ~bit;
            return before;
        }
        return false;
    }

    private void TryTellSource(string message)
    {
        try
        {
            _channel.SendText(MigrationFrameType.Error, message);
            _channel.Flush();
        }
        catch (MigrationException)
        {
            // The source is gone; it learns nothing more.
        }
    }
}
