using CsCheck;
using Vmm.Migration;
using Xunit;

namespace Vmm.Tests.Migration;

public sealed class Crc32CTests
{
    [Fact]
    public void CheckValue_MatchesTheCastagnoliStandard() =>
        // The "123456789" check value of CRC-32C (RFC 3720, iSCSI).
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));

    [Fact]
    public void AnyData_MatchesTheBitwiseDefinition()
    {
        Gen.Byte.Array[0, 300].Sample(data => Assert.Equal(Bitwise(data), Crc32C.Compute(data)), iter: 300);
    }

    [Fact]
    public void OneFlippedBit_ChangesTheChecksum()
    {
        Gen.Select(Gen.Byte.Array[1, 4096], Gen.Int[0, 4095], Gen.Int[0, 7]).Sample((data, position, bit) =>
        {
            uint before = Crc32C.Compute(data);
            data[position % data.Length] ^= (byte)(1 << bit);
            Assert.NotEqual(before, Crc32C.Compute(data));
        }, iter: 300);
    }

    private static uint Bitwise(ReadOnlySpan<byte> data)
    {
        uint crc = ~0u;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78 : crc >> 1;
        }
        return ~crc;
    }
}
