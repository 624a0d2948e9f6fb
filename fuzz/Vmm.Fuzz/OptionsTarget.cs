using System.Text;
using Vmm.Devices.Virtio;
using Vmm.Memory;

namespace Vmm.Fuzz;

/// <summary>The parsers of <c>--disk</c>, <c>--net</c> and <c>--memory</c> on any text: the first input byte picks
/// the parser, the rest is the option's value. They answer yes or no with a message and never throw; what they
/// accept holds (a disk has a path, a MAC is six bytes and unicast, a size is what the text says).</summary>
public sealed class OptionsTarget : IFuzzTarget
{
    public string Name => "options";

    public string? Run(ReadOnlySpan<byte> input)
    {
        if (input.IsEmpty) return "empty";
        string text = Encoding.UTF8.GetString(input[1..]);
        string error;
        switch (input[0] % 3)
        {
            case 0:
                if (!BlockDiskConfig.TryParse(text, out var disk, out error)) return error;
                if (disk is null || disk.Path.Length == 0 || disk.Path.Contains(',') || (disk.Id is { } id && Encoding.UTF8.GetByteCount(id) > BlockDiskConfig.MaxIdBytes))
                    throw new InvalidOperationException($"--disk '{text}' was accepted as {disk}");
                return null;
            case 1:
                if (!NetworkConfig.TryParse(text, out var network, out error)) return error;
                if (network is null || network.TapName.Length == 0 || network.Mac.Length != 6 || (network.Mac[0] & 1) != 0)
                    throw new InvalidOperationException($"--net '{text}' was accepted as {network}");
                return null;
            default:
                if (!MemorySize.TryParse(text, out ulong bytes, out error)) return error;
                if (!MemorySize.TryParse(text.Trim().ToUpperInvariant(), out ulong again, out _) || again != bytes)
                    throw new InvalidOperationException($"--memory '{text}' parsed as {bytes} but its upper-case form differently");
                return null;
        }
    }

    public IEnumerable<byte[]> Generate(int count, int seed) => Mutations.Mix(count, seed, random =>
    {
        string[] samples =
        [
            "/srv/vm/root.img", "/srv/vm/root.img,ro", "disk.img,id=boot", "disk.img,ro,id=0123456789abcdefghij", ",ro", "a,b,c",
            "tap=tap0", "tap=vmmtap0,mac=02:00:00:00:00:01", "mac=02:00:00:00:00:01", "tap=t,mac=01:00:00:00:00:00",
            "512M", "2G", "1048576", "64KiB", "1T", "18446744073709551615", "12Q", " 256 M", "",
        ];
        string text = samples[random.Next(samples.Length)];
        return [(byte)random.Next(3), .. Encoding.UTF8.GetBytes(text)];
    }, maxRandomBytes: 64);
}
