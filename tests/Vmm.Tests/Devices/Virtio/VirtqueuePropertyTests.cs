using CsCheck;
using Vmm.Devices.Virtio;
using Vmm.Fuzz;
using Vmm.Memory;
using Xunit;
using static Vmm.Tests.Devices.Virtio.SplitRingDriver;

namespace Vmm.Tests.Devices.Virtio;

public sealed class VirtqueuePropertyTests
{
    private sealed record ChainShape(bool Indirect, int ReadableCount, uint[] Lengths);

    private sealed record ValidQueueCase(int LogSize, ChainShape[] Chains, int Seed, int OffsetSeed, int LengthSeed);

    private static readonly Gen<ChainShape> GenChainShape =
        Gen.Select(Gen.Bool, Gen.Int[0, 12], Gen.UInt[0, 3000].Array[1, 12],
            (indirect, readable, lengths) => new ChainShape(indirect, Math.Min(readable, lengths.Length), lengths));

    private static readonly Gen<ValidQueueCase> GenValidQueueCase =
        Gen.Select(Gen.Int[6, 8], GenChainShape.Array[1, 4], Gen.Int, Gen.Int[0, 1 << 20], Gen.Int[0, 1 << 20],
            (logSize, chains, seed, offsetSeed, lengthSeed) => new ValidQueueCase(logSize, chains, seed, offsetSeed, lengthSeed));

    [Fact]
    public void ValidChains_PopExactlyAsPosted_AndReadWriteRoundTripAcrossSegments()
    {
        GenValidQueueCase.Sample(testCase =>
        {
            using var memory = OneMiB();
            var random = new Random(testCase.Seed);
            ushort size = (ushort)(1 << testCase.LogSize);
            var descriptorOrder = Enumerable.Range(0, size).Select(i => (ushort)i).ToArray();
            random.Shuffle(descriptorOrder);
            var driver = new SplitRingDriver(memory, size, descriptorOrder);
            var queue = driver.CreateQueue(indirect: true);

            ulong free = DataAddress;
            var posted = new List<(ushort Head, DriverBuffer[] Buffers)>();
            foreach (var shape in testCase.Chains)
            {
                var buffers = new DriverBuffer[shape.Lengths.Length];
                for (int i = 0; i < buffers.Length; i++)
                {
                    buffers[i] = new DriverBuffer(free, shape.Lengths[i], DeviceWritable: i >= shape.ReadableCount);
                    var contents = new byte[shape.Lengths[i]];
                    random.NextBytes(contents);
                    memory.Write(free, contents);
                    free += shape.Lengths[i] + (ulong)random.Next(64);
                }
                ulong table = (free + 15) & ~15UL;
                free = table + 16UL * (ulong)buffers.Length;
                posted.Add((shape.Indirect ? driver.AddIndirectChain(table, buffers) : driver.AddChain(buffers), buffers));
            }

            foreach (var (head, buffers) in posted)
            {
                Assert.True(queue.TryPopChain(memory, out var chain));
                Assert.Equal(head, chain.HeadIndex);
                var readable = buffers.Where(b => !b.DeviceWritable).Select(b => new DescriptorSegment(b.Address, b.Length)).ToArray();
                var writable = buffers.Where(b => b.DeviceWritable).Select(b => new DescriptorSegment(b.Address, b.Length)).ToArray();
                Assert.Equal(readable, chain.Readable);
                Assert.Equal(writable, chain.Writable);
                Assert.Equal(readable.Sum(s => (long)s.Length), chain.ReadableBytes);
                Assert.Equal(writable.Sum(s => (long)s.Length), chain.WritableBytes);

                byte[] readableBytes = Concatenate(memory, readable);
                long readOffset = testCase.OffsetSeed % (readableBytes.Length + 1);
                var read = new byte[testCase.LengthSeed % (readableBytes.Length + 2)];
                int readCount = chain.Read(memory, readOffset, read);
                Assert.Equal(Math.Min(read.Length, readableBytes.Length - readOffset), readCount);
                Assert.Equal(readableBytes.AsSpan((int)readOffset, readCount).ToArray(), read[..readCount]);

                long writeOffset = testCase.LengthSeed % (chain.WritableBytes + 1);
                var data = new byte[testCase.OffsetSeed % (chain.WritableBytes + 2)];
                random.NextBytes(data);
                int written = chain.Write(memory, writeOffset, data);
                Assert.Equal(Math.Min(data.Length, chain.WritableBytes - writeOffset), written);
                Assert.Equal(data[..written], Concatenate(memory, writable).AsSpan((int)writeOffset, written).ToArray());

                queue.AddUsed(memory, chain.HeadIndex, (uint)written);
                Assert.Equal((head, (uint)written), driver.UsedElement((ushort)(queue.NextUsedIndex - 1)));
            }
            Assert.False(queue.TryPopChain(memory, out _));
            Assert.Equal(posted.Count, driver.UsedIndex);
        }, iter: 300);
    }

    private static byte[] Concatenate(GuestMemory memory, DescriptorSegment[] segments)
    {
        var bytes = new byte[segments.Sum(s => (long)s.Length)];
        int at = 0;
        foreach (var segment in segments)
        {
            memory.Read(segment.Address, bytes.AsSpan(at, (int)segment.Length));
            at += (int)segment.Length;
        }
        return bytes;
    }

    // Garbage RAM: 0..128 KiB, a hole, then 192..256 KiB; addresses are drawn over 0..256 KiB (RAM, hole and
    // the edges between) and now and then anywhere in 64 bits.
    private const ulong FirstRegionBytes = 0x20000, SecondRegionAddress = 0x30000, SecondRegionBytes = 0x10000;

    private sealed record GarbageCase(int LogSize, ulong Descriptors, ulong Available, ulong Used, ushort NextAvailable,
        int AvailableAhead, bool EventIdx, bool Indirect, int Seed);

    private static readonly Gen<ulong> GenAddress = Gen.Frequency(
        (6, Gen.ULong[0, 0x40000].Select(a => a & ~15UL)),
        (2, Gen.ULong[0, 0x40000]),
        (1, Gen.ULong));

    private static readonly Gen<GarbageCase> GenGarbageCase =
        Gen.Select(Gen.Int[0, 10], GenAddress, GenAddress, GenAddress, Gen.UShort, Gen.Int[-2, 1030], Gen.Bool, Gen.Bool, Gen.Int,
            (logSize, descriptors, available, used, next, ahead, eventIdx, indirect, seed) =>
                new GarbageCase(logSize, descriptors, available, used, next, ahead, eventIdx, indirect, seed));

    [Fact]
    public void GarbageQueues_YieldChainsInsideRamOrAVirtqueueException_AndNothingElse()
    {
        GenGarbageCase.Sample(testCase =>
        {
            using var memory = GuestMemory.Allocate([(0, FirstRegionBytes), (SecondRegionAddress, SecondRegionBytes)]);
            var random = new Random(testCase.Seed);
            FillWithGarbage(memory, random, testCase);
            var queue = new Virtqueue(1024)
            {
                Size = (ushort)(1 << testCase.LogSize),
                DescriptorTableAddress = testCase.Descriptors,
                AvailableRingAddress = testCase.Available,
                UsedRingAddress = testCase.Used,
                EventIdxEnabled = testCase.EventIdx,
                IndirectEnabled = testCase.Indirect,
                NextAvailableIndex = testCase.NextAvailable,
                Ready = true,
            };
            var buffer = new byte[256];
            try
            {
                // The device's own writes (used ring, chain buffers) may land on the garbage avail idx and make
                // more chains available, as a guest could; the bound only keeps the test finite.
                for (int popped = 0; popped <= 4 * queue.Size && queue.TryPopChain(memory, out var chain); popped++)
                {
                    ChainInvariants.Check(memory, queue, chain);
                    int read = chain.Read(memory, random.Next(64), buffer);
                    chain.Write(memory, random.Next(64), buffer.AsSpan(0, read));
                    queue.AddUsed(memory, chain.HeadIndex, (uint)read);
                    queue.ShouldNotify(memory);
                }
            }
            catch (VirtqueueException)
            {
                // The one failure a guest may cause.
            }
        }, iter: 2000);
    }

    /// <summary>Random bytes, then descriptors and ring entries skewed towards values that pass some checks
    /// (small indices, addresses near RAM, flag combinations), so pops get past the first rule.</summary>
    private static void FillWithGarbage(GuestMemory memory, Random random, GarbageCase testCase)
    {
        random.NextBytes(memory.GetSpan(0, (int)FirstRegionBytes));
        random.NextBytes(memory.GetSpan(SecondRegionAddress, (int)SecondRegionBytes));
        int size = 1 << testCase.LogSize;
        for (int i = 0; i < size; i++)
        {
            ulong entry = testCase.Descriptors + 16UL * (ulong)i;
            if (memory.IsRam(entry, 16) && random.Next(4) != 0)
                memory.Write(entry, new VirtqueueDescriptor(
                    random.Next(8) == 0 ? (ulong)random.NextInt64() : (ulong)random.Next(0x40000),
                    random.Next(8) == 0 ? (uint)random.NextInt64() : (uint)random.Next(0x3000),
                    (ushort)(random.Next(16) == 0 ? random.Next(65536) : random.Next(8)),
                    (ushort)random.Next(size + 2)));
            ulong ringEntry = testCase.Available + 4 + 2UL * (ulong)i;
            if (memory.IsRam(ringEntry, 2) && random.Next(4) != 0) memory.Write(ringEntry, (ushort)random.Next(size + 2));
        }
        if (memory.IsRam(testCase.Available + 2, 2))
            memory.Write(testCase.Available + 2, (ushort)(testCase.NextAvailable + Math.Min(testCase.AvailableAhead, size + 2)));
    }
}
