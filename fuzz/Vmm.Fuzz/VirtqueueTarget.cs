namespace Vmm.Fuzz;

/// <summary>The split virtqueue as a device uses it (<see cref="VirtqueueFuzzTarget"/>).</summary>
public sealed class VirtqueueTarget : IFuzzTarget
{
    public string Name => "virtqueue";
    public string? Run(ReadOnlySpan<byte> input) => VirtqueueFuzzTarget.Run(input).Rejection;
    public IEnumerable<byte[]> Generate(int count, int seed) => FuzzInputGenerator.Generate(count, seed);
}
