using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Vmm.Migration;

/// <summary>What one more connection of a migration sends first instead of a Hello: the token the target drew for
/// that migration (128 random bits: a peer that did not see the Ready cannot guess it) and which connection this is
/// (1 up to the count the Hello asked for; 0 is the one that sent the Hello).</summary>
public readonly record struct MigrationJoin(UInt128 Token, int Index)
{
    public const int TokenBytes = 16;
    public const int Bytes = TokenBytes + 4;

    public static UInt128 NewToken() => BinaryPrimitives.ReadUInt128LittleEndian(RandomNumberGenerator.GetBytes(TokenBytes));

    public static byte[] TokenToBytes(UInt128 token)
    {
        byte[] bytes = new byte[TokenBytes];
        BinaryPrimitives.WriteUInt128LittleEndian(bytes, token);
        return bytes;
    }

    public static UInt128 ReadToken(ReadOnlySpan<byte> payload)
    {
        if (payload.Length != TokenBytes) throw new MigrationException($"migration stream: a Ready frame of {payload.Length} bytes, expected the {TokenBytes}-byte token of a migration over several connections");
        return BinaryPrimitives.ReadUInt128LittleEndian(payload);
    }

    public byte[] ToBytes()
    {
        byte[] bytes = new byte[Bytes];
        BinaryPrimitives.WriteUInt128LittleEndian(bytes, Token);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(TokenBytes), Index);
        return bytes;
    }

    public static MigrationJoin Read(ReadOnlySpan<byte> payload)
    {
        if (payload.Length != Bytes) throw new MigrationException($"migration stream: a Join frame of {payload.Length} bytes (a token and an index take {Bytes})");
        return new MigrationJoin(BinaryPrimitives.ReadUInt128LittleEndian(payload), BinaryPrimitives.ReadInt32LittleEndian(payload[TokenBytes..]));
    }
}
