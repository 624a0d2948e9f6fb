using Vmm.Serialization;
using Vmm.State;

namespace Vmm.Fuzz;

/// <summary>The saved-state reader (a snapshot's state.bin, a migration's State frame): it refuses what it
/// cannot use with a <see cref="StateFormatException"/>, and what it accepts in the current format it writes
/// back byte for byte.</summary>
public sealed class StateTarget : IFuzzTarget
{
    public string Name => "state";

    public string? Run(ReadOnlySpan<byte> input)
    {
        byte[] bytes = input.ToArray();
        MachineState state;
        try
        {
            state = MachineState.FromBytes(bytes);
        }
        catch (StateFormatException refused)
        {
            return refused.Message;
        }
        // Version 1 is read and written as the current version; anything else must survive a round trip.
        if (bytes[8] == MachineState.FormatVersion && !state.ToBytes().AsSpan().SequenceEqual(bytes))
            throw new InvalidOperationException("an accepted state does not write back to the same bytes");
        return null;
    }

    public IEnumerable<byte[]> Generate(int count, int seed) =>
        Mutations.Mix(count, seed, random => StateSamples.State(random, StateSamples.Description(random, 4UL << 30)).ToBytes());
}
