using System.Buffers.Binary;
using System.Text;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Serialization;
using Vmm.State;

namespace Vmm.Migration;

/// <summary>The target side of one migration: reads the stream, builds the machine it describes, fills its
/// RAM and restores its state. Everything read is checked (magic, version, frame lengths and checksums,
/// page addresses inside RAM, frame order); on any failure (a bug included) the half-built machine is
/// discarded, the source is told why, and a <see cref="MigrationException"/> says it to the caller.</summary>
public sealed class MigrationReceiver
{
    private readonly MigrationChannel _channel;
    private readonly Logger _log;
    private byte[] _buffer = new byte[1 << 20];
    private ulong[][]? _written;

    public MigrationReceiver(Stream stream, Logger log)
    {
        _channel = new MigrationChannel(stream);
        _log = log;
    }

    public long BytesReceived => _channel.BytesReceived;

    /// <summary>Receives a VM: <paramref name="build"/> makes the destination from the source's description
    /// (with zeroed RAM). Returns it restored and ready to run; the caller starts it and then calls
    /// <see cref="ConfirmResumed"/>.</summary>
    public T Receive<T>(Func<MachineDescription, T> build) where T : IMigrationDestination
    {
        T? machine = default;
        try
        {
            var description = ReadHello();
            machine = build(description);
            _channel.Send(MigrationFrameType.Ready, []);
            _channel.Flush();
            _written = machine.Memory.Regions.Select(r => new ulong[(r.SizeBytes / GuestMemoryRegion.PageSize + 63) / 64]).ToArray();
            while (true)
            {
                var (type, payload) = _channel.Receive(ref _buffer);
                switch (type)
                {
                    case MigrationFrameType.Pages:
                        WritePages(machine.Memory, payload.Span);
                        break;
                    case MigrationFrameType.PassEnd:
                        // Found by fuzzing: a shorter one made the read below throw, which no filter then caught.
                        if (payload.Length != sizeof(int)) throw new MigrationException($"migration stream: a PassEnd frame of {payload.Length} bytes (its pass number takes 4)");
                        _log.Debug($"migration: pass {BinaryPrimitives.ReadInt32LittleEndian(payload.Span)} received ({_channel.BytesReceived >> 20} MiB so far)");
                        _channel.Send(MigrationFrameType.PassDone, payload.Span);
                        _channel.Flush();
                        break;
                    case MigrationFrameType.State:
                        var restoring = System.Diagnostics.Stopwatch.StartNew();
                        machine.Restore(MachineState.FromBytes(payload.ToArray()));
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
            string why = e is VmmException ? e.Message : $"internal error in vmm: {e}";
            TryTellSource(e is VmmException ? e.Message : "internal error in vmm (see the target's log)");
            throw e as MigrationException ?? new MigrationException(why, e);
        }
    }

    /// <summary>Tells the source the VM runs here; if that fails the source will resume it, so the caller
    /// must stop this copy.</summary>
    public void ConfirmResumed()
    {
        _channel.Send(MigrationFrameType.Resumed, []);
        _channel.Flush();
    }

    private MachineDescription ReadHello()
    {
        var (type, payload) = _channel.Receive(ref _buffer);
        // A TLS source that refused this target's certificate says so in place of its Hello.
        if (type == MigrationFrameType.Abort) throw new MigrationException($"the source gave up: {Encoding.UTF8.GetString(payload.Span)}");
        if (type != MigrationFrameType.Hello) throw new MigrationException($"migration stream: expected a Hello frame, got {type}");
        var r = new StateReader(payload.ToArray());
        Span<byte> magic = stackalloc byte[MigrationChannel.Magic.Length];
        for (int i = 0; i < magic.Length; i++) magic[i] = r.ReadUInt8("magic");
        if (!magic.SequenceEqual(MigrationChannel.Magic)) throw new MigrationException("not a vmm migration stream (bad magic)");
        uint version = r.ReadUInt32("protocol version");
        if (version != MigrationChannel.ProtocolVersion)
            throw new MigrationException($"migration protocol version {version}; this vmm speaks version {MigrationChannel.ProtocolVersion}");
        var description = MachineDescription.Read(r);
        r.ExpectEnd("Hello frame");
        return description;
    }

    private void WritePages(GuestMemory memory, ReadOnlySpan<byte> payload)
    {
        if (payload.Length < 4) throw new MigrationException("migration stream: Pages frame without a count");
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        if (count > MigrationChannel.MaxPagesPerFrame) throw new MigrationException($"migration stream: {count} pages in one frame");
        int position = 4;
        for (uint i = 0; i < count; i++)
        {
            if (payload.Length - position < 8) throw new MigrationException("migration stream: Pages frame truncated");
            ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(payload[position..]);
            position += 8;
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
            if (payload.Length - position < MigrationChannel.PageSize) throw new MigrationException("migration stream: Pages frame truncated");
            payload.Slice(position, MigrationChannel.PageSize).CopyTo(page);
            position += MigrationChannel.PageSize;
            MarkWritten(memory, address, written: true);
        }
        if (position != payload.Length) throw new MigrationException("migration stream: trailing bytes in a Pages frame");
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
