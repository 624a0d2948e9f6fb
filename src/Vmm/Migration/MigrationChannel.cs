using System.Buffers.Binary;
using System.Text;

namespace Vmm.Migration;

/// <summary>One side of a migration connection: frames of <c>type (1) | length (4) | CRC-32C (4) | payload</c>,
/// little-endian. A stream always starts with a <see cref="MigrationFrameType.Hello"/> carrying the magic
/// and version. Whatever arrives is treated as hostile: a length above the frame type's limit, a bad
/// checksum or an unknown type ends the migration with a <see cref="MigrationException"/>.</summary>
public sealed class MigrationChannel(Stream stream)
{
    public static ReadOnlySpan<byte> Magic => "VMMMIGRT"u8;
    public const uint ProtocolVersion = 1;
    public const int PageSize = Memory.GuestMemoryRegion.PageSize;
    public const int MaxPagesPerFrame = 256;
    public const ulong ZeroPageFlag = 1;

    public const int HeaderBytes = 9;
    private readonly byte[] _header = new byte[HeaderBytes];

    public long BytesSent { get; private set; }
    public long BytesReceived { get; private set; }

    /// <summary>The largest payload each frame type may have; anything bigger is refused before it is read.</summary>
    public static int MaxPayloadBytes(MigrationFrameType type) => type switch
    {
        MigrationFrameType.Hello => 1 << 20,
        MigrationFrameType.Pages => 4 + MaxPagesPerFrame * (8 + PageSize),
        MigrationFrameType.PassEnd or MigrationFrameType.PassDone => 4,
        MigrationFrameType.State => 64 << 20,
        MigrationFrameType.Abort or MigrationFrameType.Error => 4096,
        MigrationFrameType.Ready or MigrationFrameType.Resumed => 0,
        _ => -1,
    };

    public void Send(MigrationFrameType type, ReadOnlySpan<byte> payload)
    {
        _header[0] = (byte)type;
        BinaryPrimitives.WriteUInt32LittleEndian(_header.AsSpan(1), (uint)payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(_header.AsSpan(5), Crc32C.Compute(payload));
        try
        {
            stream.Write(_header);
            stream.Write(payload);
        }
        catch (Exception e) when (IsConnectionFailure(e))
        {
            throw new MigrationException($"the connection failed while sending a {type} frame: {e.Message}", e);
        }
        BytesSent += HeaderBytes + payload.Length;
    }

    /// <summary>How a connection fails under a stream: a reset or timeout (IOException), a socket closed under
    /// a blocked call (ObjectDisposedException). Each becomes a <see cref="MigrationException"/> here, once.</summary>
    private static bool IsConnectionFailure(Exception e) => e is IOException or ObjectDisposedException or System.Net.Sockets.SocketException;

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
        ReadExactly(_header, "frame header");
        var type = (MigrationFrameType)_header[0];
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(_header.AsSpan(1));
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(_header.AsSpan(5));
        int max = MaxPayloadBytes(type);
        if (max < 0) throw new MigrationException($"migration stream: unknown frame type {(byte)type}");
        if (length > (uint)max) throw new MigrationException($"migration stream: a {type} frame of {length} bytes (at most {max})");
        if (buffer.Length < length) buffer = new byte[Math.Max(length, Math.Min(buffer.Length * 2, max))];
        var payload = buffer.AsMemory(0, (int)length);
        ReadExactly(payload.Span, $"{type} frame");
        if (Crc32C.Compute(payload.Span) != crc) throw new MigrationException($"migration stream: {type} frame checksum mismatch (corrupted in transit)");
        BytesReceived += HeaderBytes + length;
        return (type, payload);
    }

    private void ReadExactly(Span<byte> into, string what)
    {
        try
        {
            stream.ReadExactly(into);
        }
        catch (EndOfStreamException)
        {
            throw new MigrationException($"migration stream: the connection closed in the middle of a {what}");
        }
        catch (Exception e) when (IsConnectionFailure(e))
        {
            throw new MigrationException($"the connection failed while reading a {what}: {e.Message}", e);
        }
    }
}
