using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace Vmm.Serialization;

/// <summary>Appends little-endian fields to a growing buffer. Its counterpart is <see cref="StateReader"/>.</summary>
public sealed class StateWriter
{
    private readonly MemoryStream _buffer = new();

    public void WriteUInt8(byte value) => _buffer.WriteByte(value);
    public void WriteBool(bool value) => _buffer.WriteByte(value ? (byte)1 : (byte)0);

    public void WriteUInt16(ushort value)
    {
        Span<byte> bytes = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(bytes, value);
        _buffer.Write(bytes);
    }

    public void WriteUInt32(uint value)
    {
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, value);
        _buffer.Write(bytes);
    }

    public void WriteUInt64(ulong value)
    {
        Span<byte> bytes = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
        _buffer.Write(bytes);
    }

    /// <summary>A length-prefixed byte string.</summary>
    public void WriteBytes(ReadOnlySpan<byte> bytes)
    {
        WriteUInt32((uint)bytes.Length);
        _buffer.Write(bytes);
    }

    public void WriteString(string text) => WriteBytes(Encoding.UTF8.GetBytes(text));

    public void WriteOptionalString(string? text)
    {
        WriteBool(text is not null);
        if (text is not null) WriteString(text);
    }

    /// <summary>A KVM struct, as the kernel lays it out (x86_64 is little-endian), with its size in front
    /// so a reader built against another layout refuses it.</summary>
    public void WriteStruct<T>(in T value) where T : unmanaged =>
        WriteBytes(MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)));

    public void WriteStructs<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        WriteUInt32((uint)values.Length);
        WriteBytes(MemoryMarshal.AsBytes(values));
    }

    public byte[] ToArray() => _buffer.ToArray();
}
