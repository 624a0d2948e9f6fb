namespace Vmm.Fuzz;

/// <summary>One thing vmm reads from outside, as a fuzz target: a guest's virtqueue, a migration stream, a
/// saved state, a kernel image, a command-line option.</summary>
public interface IFuzzTarget
{
    /// <summary>What the command line calls it (<c>Vmm.Fuzz NAME</c>).</summary>
    string Name { get; }

    /// <summary>Feeds one input to the code under test. Returns null when it was accepted, or the message of
    /// the expected failure it was refused with (one of vmm's <see cref="VmmException"/>s). Anything else
    /// escapes: a crash for the fuzzer.</summary>
    string? Run(ReadOnlySpan<byte> input);

    /// <summary>Deterministic inputs for the smoke run and the seed corpus: valid ones, ones with a rule broken,
    /// random bytes, and mutations of all of these.</summary>
    IEnumerable<byte[]> Generate(int count, int seed);
}
