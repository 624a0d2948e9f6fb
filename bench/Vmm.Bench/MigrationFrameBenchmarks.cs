using BenchmarkDotNet.Attributes;
using Vmm.Migration;

namespace Vmm.Bench;

/// <summary>What migration pages cost the two ends besides the network: the CRC-32C of a full Pages frame
/// of random pages (256 pages, 1 MiB), which both ends compute, and the source's check of 256 pages for
/// all zeros, on zero pages (the worst case: a page with data stops the check at its first byte).
/// Reported per frame of 256 pages.</summary>
[Config(typeof(OperationsPerSecondConfig))]
[MemoryDiagnoser]
public class MigrationFrameBenchmarks
{
    private readonly byte[] _frame = new byte[MigrationChannel.MaxPayloadBytes(MigrationFrameType.Pages)];
    private readonly byte[] _zeroPages = new byte[MigrationChannel.MaxPagesPerFrame * MigrationChannel.PageSize];

    [GlobalSetup]
    public void FillWithRandomPages() => new Random(1).NextBytes(_frame);

    [Benchmark]
    public uint Crc32COfAFullFrame() => Crc32C.Compute(_frame);

    [Benchmark]
    public int ZeroCheckOf256Pages()
    {
        int nonZero = 0;
        for (int page = 0; page < MigrationChannel.MaxPagesPerFrame; page++)
            if (_zeroPages.AsSpan(page * MigrationChannel.PageSize, MigrationChannel.PageSize).ContainsAnyExcept((byte)0)) nonZero++;
        return nonZero;
    }
}
