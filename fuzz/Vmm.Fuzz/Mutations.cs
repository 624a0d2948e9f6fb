namespace Vmm.Fuzz;

/// <summary>Small changes to a valid input, the kind that get past a parser's first checks and reach its
/// later ones: bits flipped, bytes set to edge values, lengths nudged, the input cut short or grown.</summary>
public static class Mutations
{
    public static byte[] Mutate(byte[] input, Random random, int maxMutations = 6)
    {
        int mutations = random.Next(maxMutations + 1);
        for (int m = 0; m < mutations && input.Length > 0; m++)
        {
            int offset = random.Next(input.Length);
            switch (random.Next(7))
            {
                case 0: input[offset] ^= (byte)(1 << random.Next(8)); break;
                case 1: input[offset] = (byte)random.Next(256); break;
                case 2: input[offset] = (byte)(random.Next(2) == 0 ? 0 : 0xff); break;
                case 3: input[offset] = (byte)(input[offset] + random.Next(-2, 3)); break;
                case 4: input = input[..offset]; break;
                case 5: input = [.. input, .. RandomBytes(random, random.Next(64))]; break;
                default:
                    int length = Math.Min(random.Next(1, 16), input.Length - offset);
                    input = [.. input[..offset], .. input.AsSpan(offset, length), .. input[offset..]];
                    break;
            }
        }
        return input;
    }

    public static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    /// <summary>A quarter random bytes, the rest <paramref name="valid"/> inputs, a third of those mutated.</summary>
    public static IEnumerable<byte[]> Mix(int count, int seed, Func<Random, byte[]> valid, int maxRandomBytes = 4096)
    {
        for (int i = 0; i < count; i++)
        {
            // Not HashCode.Combine: it is seeded anew in every process, and a seed must name the same inputs
            // in every run (a smoke run's findings are replayed by seed).
            var random = new Random(unchecked(seed * 1_000_003 + i));
            if (random.Next(4) == 0)
            {
                yield return RandomBytes(random, random.Next(maxRandomBytes));
                continue;
            }
            byte[] input = valid(random);
            yield return random.Next(3) == 0 ? input : Mutate(input, random);
        }
    }
}
