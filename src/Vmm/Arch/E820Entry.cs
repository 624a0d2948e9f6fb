namespace Vmm.Arch;

public enum E820Type : uint
{
    Ram = 1,
    Reserved = 2,
}

/// <summary>One entry of the BIOS e820 memory map that Linux reads from the zero page.</summary>
public readonly record struct E820Entry(ulong Address, ulong SizeBytes, E820Type Type)
{
    public const int SizeInZeroPage = 20;

    /// <summary>The map vmm presents: low RAM up to the EBDA, the EBDA-to-1-MiB area reserved
    /// (MP table, legacy ROM space), then RAM from 1 MiB, split around the 32-bit MMIO hole.</summary>
    public static IReadOnlyList<E820Entry> MapFor(IReadOnlyList<(ulong GuestAddress, ulong SizeBytes)> ramRanges)
    {
        var entries = new List<E820Entry>
        {
            new(0, X86Layout.EbdaAddress, E820Type.Ram),
            new(X86Layout.EbdaAddress, X86Layout.HighMemoryAddress - X86Layout.EbdaAddress, E820Type.Reserved),
        };
        foreach (var (address, size) in ramRanges)
        {
            ulong start = Math.Max(address, X86Layout.HighMemoryAddress);
            ulong end = address + size;
            if (end > start) entries.Add(new(start, end - start, E820Type.Ram));
        }
        return entries;
    }
}
