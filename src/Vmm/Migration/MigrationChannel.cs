using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;

namespace Vmm.Migration;

/// <summary>One side of a migration connection: frames of <c>type (1) | length (4) | CRC-32C (4) | payload</c>,
/// little-endian. A stream always starts with a <see cref="MigrationFrameType.Hello"/> carrying the magic
/// and version. Version 3 added the commit step (<see cref="MigrationFrameType.Prepared"/>, <see cref="MigrationFrameType.Commit"/>)
/// and the migration's id; an older source, which took a lost confirmation for a failed migration and resumed its VM
/// beside the target's, is refused. Whatever arrives is treated as hostile: a
/// length above the frame type's limit, a bad checksum or an unknown type ends the migration with a
/// <see cref="MigrationException"/>.</summary>
public sealed class MigrationChannel(Stream stream)
{
    public static ReadOnlySpan<byte> Magic => "VMMMIGRT"u8;
    /// <summary>3: the Hello carries the VM's name, each vCPU's CPUID, whether the disk images travel in the stream
    /// (DiskData, DiskZero) and the migration's id; the target resumes the VM only on Commit. 4: a replication's
    /// handover ends with the primary's own Handover frame after the standby's echo (the close alone proved nothing).</summary>
    public const uint ProtocolVersion = 4;
    public const int PageSize = Memory.GuestMemoryRegion.PageSize;
    public const int MaxPagesPerFrame = 256;
    public const ulong ZeroPageFlag = 1;
    /// <summary>The most image bytes one DiskData frame carries.</summary>
    public const int MaxDiskDataBytes = 1 << 20;
    public const int DiskDataHeaderBytes = 12;

    public const int HeaderBytes = 9;
    // One each way: a writer thread may send while another thread reads.
    private readonly byte[] _sendHeader = new byte[HeaderBytes], _receiveHeader = new byte[HeaderBytes];
    private const int SmallFrameBytes = 4096;
    private readonly byte[] _smallFrame = new byte[HeaderBytes + SmallFrameBytes];

    public long BytesSent { get; private set; }
    public long BytesReceived { get; private set; }

    /// <summary>The largest payload each frame type may have; anything bigger is refused before it is read.</summary>
    public static int MaxPayloadBytes(MigrationFrameType type) => type switch
    {
        MigrationFrameType.Hello => 1 << 20,
        MigrationFrameType.Pages => 4 + MaxPagesPerFrame * (8 + PageSize),
        MigrationFrameType.PassEnd or MigrationFrameType.PassDone => 4,
        MigrationFrameType.DiskData => DiskDataHeaderBytes + MaxDiskDataBytes,
        MigrationFrameType.DiskZero => 20,
        MigrationFrameType.State => 64 << 20,
        MigrationFrameType.Abort or MigrationFrameType.Error => 4096,
        MigrationFrameType.Ready => MigrationJoin.TokenBytes,
        MigrationFrameType.Join => MigrationJoin.Bytes,
        MigrationFrameType.Resumed or MigrationFrameType.Heartbeat or MigrationFrameType.Prepared or MigrationFrameType.Commit => 0,
        MigrationFrameType.Locate => MigrationLocate.MaxBytes,
        MigrationFrameType.Located => 1,
        MigrationFrameType.EpochEnd or MigrationFrameType.EpochCommitted or MigrationFrameType.Handover => 8,
        _ => -1,
    };

    /// <summary>Time spent computing checksums and in the socket's reads and writes (the kernel's copies, and on a
    /// target the first touch of guest RAM the reads land in), in <see cref="Stopwatch"/> ticks: the breakdown a
    /// migration logs. One thread uses a channel at a time.</summary>
    public long ChecksumTicks { get; private set; }
    public long SocketTicks { get; private set; }

    public void Send(MigrationFrameType type, ReadOnlySpan<byte> payload) => Send(type, payload, []);

    /// <summary>Sends one frame whose payload is <paramref name="first"/> followed by <paramref name="second"/>.</summary>
    public void Send(MigrationFrameType type, ReadOnlySpan<byte> first, ReadOnlySpan<byte> second)
    {
        _sendHeader[0] = (byte)type;
        BinaryPrimitives.WriteUInt32LittleEndian(_sendHeader.AsSpan(1), (uint)(first.Length + second.Length));
        long started = Stopwatch.GetTimestamp();
        BinaryPrimitives.WriteUInt32LittleEndian(_sendHeader.AsSpan(5), ~Crc32C.Append(Crc32C.Append(~0u, first), second));
        long checksummed = Stopwatch.GetTimestamp();
        ChecksumTicks += checksummed - started;
        try
        {
            int small = first.Length + second.Length;
            if (small <= SmallFrameBytes)
            {
                // One write: a control frame split over segments waits for the peer's delayed ACK (Nagle, ~40 ms)
                // where the socket has Nagle on.
                _sendHeader.CopyTo(_smallFrame, 0);
                first.CopyTo(_smallFrame.AsSpan(HeaderBytes));
                second.CopyTo(_smallFrame.AsSpan(HeaderBytes + first.Length));
                stream.Write(_smallFrame, 0, HeaderBytes + small);
            }
            else
            {
                stream.Write(_sendHeader);
                stream.Write(first);
                if (!second.IsEmpty) stream.Write(second);
            }
        }
        catch (Exception e) when (IsConnectionFailure(e))
        {
            throw new MigrationException($"the connection failed while sending a {type} frame: {e.Message}", e);
        }
        SocketTicks += Stopwatch.GetTimestamp() - checksummed;
        BytesSent += HeaderBytes + first.Length + second.Length;
    }

    /// <summary>How a connection fails under a stream: a reset or timeout (IOException), a socket closed under
    /// a blocked call (ObjectDisposedException). Each becomes a <see cref="MigrationException"/> here, once.</summary>
    private static bool IsConnectionFailure(Exception e) => e is IOException or ObjectDisposedException or System.Net.Sockets.SocketException;

    /// <summary>Whether <paramref name="e"/>, thrown by this channel, says the connection ended or failed (rather than
    /// that the peer sent something wrong).</summary>
    public static bool IsConnectionLoss(Exception e) => e is MigrationException { InnerException: { } inner } && IsConnectionFailure(inner);

    public void SendText(MigrationFrameType type, string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        Send(type, bytes.AsSpan(0, Math.Min(bytes.Length, MaxPayloadBytes(type))));
    }

    public void Flush()
    {
        try
        {
            stream.Flush();
        }
        catch (Exception e) when (IsConnectionFailure(e))
        {
            throw new MigrationException($"the connection failed: {e.Message}", e);
        }
    }

    /// <summary>Reads the next frame into <paramref name="buffer"/> (grown as needed, up to the type's limit)
    /// and returns its type and payload. The end of the stream is an error: every exchange says when it ends.</summary>
    public (MigrationFrameType Type, ReadOnlyMemory<byte> Payload) Receive(ref byte[] buffer)
    {
        var frame = ReceiveHeader();
        return (frame.Type, ReceivePayload(frame, ref buffer));
    }

    /// <summary>A frame whose header has been read: its type (known) and length (within the type's limit).</summary>
    public readonly record struct FrameHeader(MigrationFrameType Type, int Length, uint Crc);

    public FrameHeader ReceiveHeader()
    {
        ReadExactly(_receiveHeader, "frame header");
        var type = (MigrationFrameType)_receiveHeader[0];
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(_receiveHeader.AsSpan(1));
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(_receiveHeader.AsSpan(5));
        int max = MaxPayloadBytes(type);
        if (max < 0) throw new MigrationException($"migration stream: unknown frame type {(byte)type}");
        if (length > (uint)max) throw new MigrationException($"migration stream: a {type} frame of {length} bytes (at most {max})");
        BytesReceived += HeaderBytes;
        return new FrameHeader(type, (int)length, crc);
    }

    /// <summary>Reads a frame's whole payload into <paramref name="buffer"/> and checks its checksum.</summary>
    public ReadOnlyMemory<byte> ReceivePayload(FrameHeader frame, ref byte[] buffer)
    {
        if (buffer.Length < frame.Length) buffer = new byte[Math.Max(frame.Length, Math.Min(buffer.Length * 2, MaxPayloadBytes(frame.Type)))];
        var payload = buffer.AsMemory(0, frame.Length);
        var reader = OpenPayload(frame);
        reader.Read(payload.Span, $"{frame.Type} frame");
        reader.Finish();
        return payload;
    }

    /// <summary>Reads a frame's payload in pieces, each straight where the caller wants it (a page into guest
    /// RAM, with no copy in between); <see cref="PayloadReader.Finish"/> then checks the length and checksum.
    /// What was placed before a bad checksum is found must be discarded by the caller (a migration that fails
    /// discards the whole machine).</summary>
    public PayloadReader OpenPayload(FrameHeader frame) => new(this, frame);

    public sealed class PayloadReader(MigrationChannel channel, FrameHeader frame)
    {
        private uint _crc = ~0u;

        public int Remaining { get; private set; } = frame.Length;

        public void Read(Span<byte> into, string what)
        {
            if (into.Length > Remaining) throw new MigrationException($"migration stream: {frame.Type} frame truncated ({what} runs past its end)");
            long started = Stopwatch.GetTimestamp();
            channel.ReadExactly(into, $"{frame.Type} frame");
            long read = Stopwatch.GetTimestamp();
            _crc = Crc32C.Append(_crc, into);
            channel.SocketTicks += read - started;
            channel.ChecksumTicks += Stopwatch.GetTimestamp() - read;
            Remaining -= into.Length;
            channel.BytesReceived += into.Length;
        }

        public void Finish()
        {
            if (Remaining != 0) throw new MigrationException($"migration stream: trailing bytes in a {frame.Type} frame");
            if (~_crc != frame.Crc) throw new MigrationException($"migration stream: {frame.Type} frame checksum mismatch (corrupted in transit)");
        }
    }

    private void ReadExactly(Span<byte> into, string what)
    {
        try
        {
            stream.ReadExactly(into);
        }
        catch (EndOfStreamException)
        {
            throw new MigrationException($"migration stream: the connection closed in the middle of a {what}", new EndOfStreamException());
        }
        catch (Exception e) when (IsConnectionFailure(e))
        {
            throw new MigrationException($"the connection failed while reading a {what}: {e.Message}", e);
        }
    }
}
