using System.Buffers.Binary;

namespace Vmm.Fuzz;

/// <summary>Deterministic fuzz inputs for the smoke run and the seed corpus: a quarter plain random
/// bytes, the rest well-formed queues (direct and indirect chains), a third of those with one rule
/// deliberately broken, and a few random mutations on top, so runs get past the first checks and reach
/// every later one.</summary>
public static class FuzzInputGenerator
{
    private const ushort FlagNext = 1, FlagWrite = 2, FlagIndirect = 4;
    private const ulong DescriptorTableAddress = 0x1000;
    private const ulong DataStart = 0x4000;

    public static IEnumerable<byte[]> Generate(int count, int seed)
    {
        for (int i = 0; i < count; i++)
        {
            var random = new Random(HashCode.Combine(seed, i));
            yield return random.Next(4) == 0 ? RandomBytes(random) : Mutate(WellFormed(random, breakARule: random.Next(3) == 0), random);
        }
    }

    private static byte[] RandomBytes(Random random)
    {
        // Mostly short: a short input leaves the rest of RAM zero, which is a layout of its own.
        var input = new byte[random.Next(random.Next(4) == 0 ? FuzzInputLayout.MaxInputBytes + 1 : 4096)];
        random.NextBytes(input);
        return input;
    }

    /// <summary>A queue of up to 256 entries at 0x1000 with some chains made available, as a driver would.</summary>
    private static byte[] WellFormed(Random random, bool breakARule)
    {
        var input = new byte[FuzzInputLayout.MaxInputBytes];
        int logSize = random.Next(9);
        ushort size = (ushort)(1 << logSize);
        bool eventIdx = random.Next(2) == 0, indirect = random.Next(2) == 0;
        ulong available = DescriptorTableAddress + 16UL * size;
        ulong used = (available + 6 + 2UL * size + 3) & ~3UL;
        input[0] = (byte)(logSize | (eventIdx ? 0x10 : 0) | (indirect ? 0x20 : 0));
        FuzzInputLayout.WriteAddress(input.AsSpan(1), DescriptorTableAddress);
        FuzzInputLayout.WriteAddress(input.AsSpan(4), available);
        FuzzInputLayout.WriteAddress(input.AsSpan(7), used);
        ushort nextAvailable = (ushort)random.Next(65536);
        BinaryPrimitives.WriteUInt16LittleEndian(input.AsSpan(10), nextAvailable);
        BinaryPrimitives.WriteUInt16LittleEndian(input.AsSpan(12), (ushort)random.Next(65536));
        input[14] = (byte)random.Next(1, 256);
        input[15] = (byte)random.Next(256);

        var image = new GuestImage(input);
        ushort freeDescriptor = 0;
        ulong nextTable = DataStart;
        int chains = random.Next(Math.Min((int)size, 8) + 1), published = 0;
        for (int c = 0; c < chains && freeDescriptor < size; c++)
        {
            ushort head = freeDescriptor;
            bool useIndirect = indirect && random.Next(2) == 0;
            int length = random.Next(1, useIndirect ? 12 : Math.Min(4, size - freeDescriptor) + 1);
            int readable = random.Next(length + 1);
            if (useIndirect)
            {
                ulong table = nextTable;
                nextTable += 16UL * (ulong)length;
                for (int d = 0; d < length; d++)
                    image.WriteDescriptor(table + 16UL * (ulong)d, RandomBuffer(random), (uint)random.Next(600),
                        (ushort)((d >= readable ? FlagWrite : 0) | (d < length - 1 ? FlagNext : 0)), (ushort)(d + 1));
                image.WriteDescriptor(DescriptorTableAddress + 16UL * freeDescriptor++, table, (uint)(16 * length), FlagIndirect, 0);
            }
            else
            {
                for (int d = 0; d < length; d++, freeDescriptor++)
                    image.WriteDescriptor(DescriptorTableAddress + 16UL * freeDescriptor, RandomBuffer(random), (uint)random.Next(600),
                        (ushort)((d >= readable ? FlagWrite : 0) | (d < length - 1 ? FlagNext : 0)), (ushort)(freeDescriptor + 1));
            }
            image.WriteUInt16(available + 4 + 2UL * (ulong)((nextAvailable + c) & (size - 1)), head);
            published++;
        }
        image.WriteUInt16(available + 2, (ushort)(nextAvailable + published));
        image.WriteUInt16(available + 4 + 2UL * size, (ushort)random.Next(65536));
        if (breakARule && published > 0)
            BreakARule(image, random, size, DescriptorTableAddress + 16UL * (ulong)random.Next(freeDescriptor), available, nextAvailable);
        // RAM past the input's end reads as zero, so trailing zeros only slow a fuzzer down.
        return input[..(input.AsSpan().LastIndexOfAnyExcept((byte)0) + 1)];
    }

    /// <summary>One violation a hostile driver might try, on a descriptor the chains above use.</summary>
    private static void BreakARule(GuestImage image, Random random, ushort size, ulong descriptor, ulong available, ushort nextAvailable)
    {
        ulong table = 0x8000;
        switch (random.Next(8))
        {
            case 0: // loop back to the first descriptor
                image.WriteDescriptor(descriptor, 0x5000, 8, FlagNext, 0);
                break;
            case 1: // next outside the table
                image.WriteDescriptor(descriptor, 0x5000, 8, FlagNext, (ushort)(size + random.Next(3)));
                break;
            case 2: // nested indirect table
                image.WriteDescriptor(table, 0x9000, 16, FlagIndirect, 0);
                image.WriteDescriptor(descriptor, table, 16, FlagIndirect, 0);
                break;
            case 3: // indirect together with next
                image.WriteDescriptor(table, 0x5000, 8, 0, 0);
                image.WriteDescriptor(descriptor, table, 16, FlagIndirect | FlagNext, 0);
                break;
            case 4: // indirect table of a bad length, looping inside itself, or with next past its end
                image.WriteDescriptor(table, 0x5000, 8, FlagNext, (ushort)random.Next(4));
                image.WriteDescriptor(descriptor, table, (uint)random.Next(0, 40), FlagIndirect, 0);
                break;
            case 5: // readable after writable
                image.WriteDescriptor(descriptor, 0x5000, 8, FlagWrite | FlagNext, (ushort)((descriptor - DescriptorTableAddress) / 16 + 1 & (ulong)(size - 1)));
                break;
            case 6: // head outside the table
                image.WriteUInt16(available + 4 + 2UL * (ulong)(nextAvailable & (size - 1)), (ushort)(size + random.Next(100)));
                break;
            default: // avail idx too far ahead
                image.WriteUInt16(available + 2, (ushort)(nextAvailable + size + 1 + random.Next(100)));
                break;
        }
    }

    /// <summary>Mostly inside RAM, now and then at a region's edge, in the hole, or anywhere.</summary>
    private static ulong RandomBuffer(Random random) => random.Next(40) switch
    {
        < 24 => (ulong)random.Next(0x4000, 0xfc00),
        < 38 => (ulong)random.Next(0x20000, 0x2fc00),
        38 => (ulong)random.Next(0xfc00, 0x10000),
        _ => (ulong)random.NextInt64(),
    };

    private static byte[] Mutate(byte[] input, Random random)
    {
        int mutations = random.Next(7);
        for (int m = 0; m < mutations; m++)
        {
            // The header and the first 12 KiB (tables and rings) are where a mutation changes the most.
            int offset = random.Next(3) == 0 ? random.Next(input.Length) : random.Next(Math.Min(input.Length, 0x3000));
            switch (random.Next(4))
            {
                case 0: input[offset] ^= (byte)(1 << random.Next(8)); break;
                case 1: input[offset] = (byte)random.Next(256); break;
                case 2: input[offset] = (byte)(random.Next(2) == 0 ? 0 : 0xff); break;
                default: input[offset] = (byte)(input[offset] + random.Next(-2, 3)); break;
            }
        }
        return input;
    }

    /// <summary>Writes guest-addressed values into an input's RAM part.</summary>
    private readonly struct GuestImage(byte[] input)
    {
        public void WriteDescriptor(ulong address, ulong bufferAddress, uint length, ushort flags, ushort next)
        {
            int offset = FuzzInputLayout.InputOffset(address);
            if (offset < 0 || offset + 16 > input.Length) return;
            var span = input.AsSpan(offset, 16);
            BinaryPrimitives.WriteUInt64LittleEndian(span, bufferAddress);
            BinaryPrimitives.WriteUInt32LittleEndian(span[8..], length);
            BinaryPrimitives.WriteUInt16LittleEndian(span[12..], flags);
            BinaryPrimitives.WriteUInt16LittleEndian(span[14..], next);
        }

        public void WriteUInt16(ulong address, ushort value)
        {
            int offset = FuzzInputLayout.InputOffset(address);
            if (offset >= 0 && offset + 2 <= input.Length) BinaryPrimitives.WriteUInt16LittleEndian(input.AsSpan(offset), value);
        }
    }
}
