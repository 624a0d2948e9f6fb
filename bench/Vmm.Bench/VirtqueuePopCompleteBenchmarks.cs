using BenchmarkDotNet.Attributes;
using Vmm.Devices.Virtio;
using Vmm.Memory;
using static Vmm.Devices.Virtio.SplitVirtqueueLayout;
using static Vmm.Bench.DescriptorTableWriter;

namespace Vmm.Bench;

/// <summary>Device-side cost of the split virtqueue: per operation the driver makes a batch of 256 chains
/// available (one avail idx store, the ring entries already in place) and the device pops and completes
/// each, then asks whether to notify. Reported per chain; the target is at least 5 million chains per
/// second per core (Op/s).</summary>
[Config(typeof(OperationsPerSecondConfig))]
[MemoryDiagnoser]
public class VirtqueuePopCompleteBenchmarks
{
    public enum ChainShape
    {
        /// <summary>One device-writable buffer (a virtio-net receive buffer).</summary>
        OneDescriptor,
        /// <summary>Header, data, status in three chained descriptors (a virtio-blk read).</summary>
        ThreeDescriptors,
        /// <summary>The same three buffers in an indirect table (what Linux sends when it can).</summary>
        ThreeInIndirectTable,
    }

    public const int ChainsPerOperation = 256;
    private const ushort QueueSize = 256;
    private const ulong DescriptorTableAddress = 0x10000, AvailableRingAddress = 0x20000, UsedRingAddress = 0x21000;
    private const ulong IndirectTablesAddress = 0x30000, BuffersAddress = 0x40000;

    private GuestMemory _memory = null!;
    private Virtqueue _queue = null!;
    private ushort _availableIndex;

    [Params(ChainShape.OneDescriptor, ChainShape.ThreeDescriptors, ChainShape.ThreeInIndirectTable)]
    public ChainShape Shape { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate([(0, 4UL << 20)]);
        // Three direct descriptors per chain leave room for 85 chains in a 256-entry table; the ring's
        // 256 slots then name those 85 heads in turn. The device neither knows nor cares.
        int distinctChains = Shape == ChainShape.ThreeDescriptors ? QueueSize / 3 : QueueSize;
        for (int chain = 0; chain < distinctChains; chain++)
        {
            ulong buffer = BuffersAddress + (ulong)chain * 0x1000;
            switch (Shape)
            {
                case ChainShape.OneDescriptor:
                    Write(_memory, DescriptorTableAddress, chain, buffer, 1526, FlagWrite, 0);
                    break;
                case ChainShape.ThreeDescriptors:
                    WriteBlockRead(DescriptorTableAddress, 3 * chain, buffer);
                    break;
                case ChainShape.ThreeInIndirectTable:
                    ulong table = IndirectTablesAddress + (ulong)chain * 48;
                    WriteBlockRead(table, 0, buffer);
                    Write(_memory, DescriptorTableAddress, chain, table, 48, FlagIndirect, 0);
                    break;
            }
        }
        int stride = Shape == ChainShape.ThreeDescriptors ? 3 : 1;
        for (int slot = 0; slot < QueueSize; slot++)
            _memory.Write(AvailableRingAddress + AvailableRingOffset + 2UL * (ulong)slot, (ushort)(slot % distinctChains * stride));

        _queue = new Virtqueue(QueueSize)
        {
            DescriptorTableAddress = DescriptorTableAddress,
            AvailableRingAddress = AvailableRingAddress,
            UsedRingAddress = UsedRingAddress,
            IndirectEnabled = true,
            EventIdxEnabled = true,
        };
        _queue.Validate(_memory);
        _queue.Ready = true;
    }

    [GlobalCleanup]
    public void Cleanup() => _memory.Dispose();

    [Benchmark(OperationsPerInvoke = ChainsPerOperation)]
    public int PopAndComplete()
    {
        _availableIndex += ChainsPerOperation;
        _memory.Write(AvailableRingAddress + AvailableIndexOffset, _availableIndex);
        int completed = 0;
        while (_queue.TryPopChain(_memory, out var chain))
        {
            _queue.AddUsed(_memory, chain.HeadIndex, (uint)chain.WritableBytes);
            completed++;
        }
        _queue.ShouldNotify(_memory);
        return completed;
    }

    private void WriteBlockRead(ulong table, int first, ulong buffer)
    {
        Write(_memory, table, first, buffer, 16, FlagNext, (ushort)(first + 1));
        Write(_memory, table, first + 1, buffer + 16, 512, FlagWrite | FlagNext, (ushort)(first + 2));
        Write(_memory, table, first + 2, buffer + 528, 1, FlagWrite, 0);
    }
}
