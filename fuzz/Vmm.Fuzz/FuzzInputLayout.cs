using System.Buffers.Binary;

namespace Vmm.Fuzz;

/// <summary>How a fuzz input's bytes become a queue and guest RAM. A 16-byte header sets the queue up;
/// the rest is RAM contents: the first 64 KiB at guest 0, the next 64 KiB at 0x20000, with a hole
/// between them and nothing above 0x30000, so addresses can fall in RAM, in the hole or past the end.
/// <code>
/// byte 0       bits 0-3: log2(queue size); bit 4: EVENT_IDX; bit 5: INDIRECT_DESC
/// bytes 1-3    descriptor table address, 24-bit little-endian, masked to 18 bits (so about half land in RAM)
/// bytes 4-6    available ring address (same encoding)
/// bytes 7-9    used ring address (same encoding)
/// bytes 10-11  the device's NextAvailableIndex
/// bytes 12-13  the device's NextUsedIndex
/// byte 14      how many chains to pop at most
/// byte 15      where in each chain the harness reads and writes (seed of offsets and lengths)
/// </code></summary>
public static class FuzzInputLayout
{
    public const int HeaderBytes = 16;
    public const ulong RegionBytes = 0x10000;
    public const ulong FirstRegionAddress = 0;
    public const ulong SecondRegionAddress = 0x20000;
    public const ulong AddressMask = 0x3ffff;
    public const int MaxInputBytes = HeaderBytes + 2 * (int)RegionBytes;

    public static int LogSize(ReadOnlySpan<byte> header) => header[0] & 0xf;
    public static bool EventIdx(ReadOnlySpan<byte> header) => (header[0] & 0x10) != 0;
    public static bool Indirect(ReadOnlySpan<byte> header) => (header[0] & 0x20) != 0;
    public static ulong DescriptorTableAddress(ReadOnlySpan<byte> header) => Address(header[1..4]);
    public static ulong AvailableRingAddress(ReadOnlySpan<byte> header) => Address(header[4..7]);
    public static ulong UsedRingAddress(ReadOnlySpan<byte> header) => Address(header[7..10]);
    public static ushort NextAvailableIndex(ReadOnlySpan<byte> header) => BinaryPrimitives.ReadUInt16LittleEndian(header[10..]);
    public static ushort NextUsedIndex(ReadOnlySpan<byte> header) => BinaryPrimitives.ReadUInt16LittleEndian(header[12..]);
    public static int MaxChains(ReadOnlySpan<byte> header) => header[14];
    public static byte AccessSeed(ReadOnlySpan<byte> header) => header[15];

    /// <summary>Where guest address <paramref name="guestAddress"/> sits in an input, or -1 outside RAM.</summary>
    public static int InputOffset(ulong guestAddress) => guestAddress switch
    {
        < FirstRegionAddress + RegionBytes => HeaderBytes + (int)guestAddress,
        >= SecondRegionAddress and < SecondRegionAddress + RegionBytes => HeaderBytes + (int)(RegionBytes + guestAddress - SecondRegionAddress),
        _ => -1,
    };

    public static void WriteAddress(Span<byte> field, ulong address)
    {
        field[0] = (byte)address;
        field[1] = (byte)(address >> 8);
        field[2] = (byte)(address >> 16);
    }

    private static ulong Address(ReadOnlySpan<byte> field) => (field[0] | (ulong)field[1] << 8 | (ulong)field[2] << 16) & AddressMask;
}
