using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace Vmm.Serialization;

/// <summary>Reads what <see cref="StateWriter"/> wrote. The bytes may come from a corrupted file or a
/// hostile peer: every length is checked against what is left and against a limit the caller gives, and
/// any violation is a <see cref="StateFormatException"/> naming what was being read.</summary>
public sealed class StateReader(ReadOnlyMemory<byte> bytes)
{
    private int _position;

    public int Remaining => bytes.Length - _position;

    public byte ReadUInt8(string what) => Take(1, what)[0];

    public bool ReadBool(string what) => ReadUInt8(what) switch
    {
        0 => false,
        1 => true,
        var b => throw new StateFormatException($"{what}: {b} is not a boolean"),
    };

    public ushort ReadUInt16(string what) => BinaryPrimitives.ReadUInt16LittleEndian(Take(2, what));
    public uint ReadUInt32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, what));
    public ulong ReadUInt64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, what));

    /// <summary>A count of items, refused above <paramref name="max"/>.</summary>
    public int ReadCount(string what, int max)
    {
        uint count = ReadUInt32(what);
        if (count > (uint)max) throw new StateFormatException($"{what}: {count} is more than the {max} allowed");
        return (int)count;
    }

    public byte[] ReadBytes(string what, int maxLength)
    {
        int length = ReadCount($"{what} length", maxLength);
        return Take(length, what).ToArray();
    }

    public string ReadString(string what, int maxLength = 4096)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(ReadBytes(what, maxLength));
        }
        catch (DecoderFallbackException)
        {
            throw new StateFormatException($"{what}: not UTF-8 text");
        }
    }

    public string? ReadOptionalString(string what, int maxLength = 4096) =>
        ReadBool($"{what} present") ? ReadString(what, maxLength) : null;

    public unsafe T ReadStruct<T>(string what) where T : unmanaged
    {
        int length = ReadCount($"{what} length", sizeof(T));
        if (length != sizeof(T)) throw new StateFormatException($"{what}: {length} bytes where this vmm expects {sizeof(T)}");
        return MemoryMarshal.Read<T>(Take(length, what));
    }

    public unsafe T[] ReadStructs<T>(string what, int maxCount) where T : unmanaged
    {
        int count = ReadCount($"{what} count", maxCount);
        int length = ReadCount($"{what} length", maxCount * sizeof(T));
        if (length != count * sizeof(T)) throw new StateFormatException($"{what}: {length} bytes for {count} entries of {sizeof(T)}");
        return MemoryMarshal.Cast<byte, T>(Take(length, what)).ToArray();
    }

    /// <summary>Fails unless everything was read: trailing bytes mean the writer and reader disagree.</summary>
    public void ExpectEnd(string what)
    {
        if (Remaining != 0) throw new StateFormatException($"{what}: {Remaining} unexpected bytes at the end");
    }

    private ReadOnlySpan<byte> Take(int length, string what)
    {
        if (length > Remaining)
            throw new StateFormatException($"{what}: truncated ({length} bytes needed at offset {_position}, {Remaining} left)");
        var span = bytes.Span.Slice(_position, length);
        _position += length;
        return span;
    }
}
