using Vmm.Devices.Virtio;
using Vmm.Memory;

namespace Vmm.Fuzz;

/// <summary>The fuzz target: builds guest RAM and a queue from the input (see <see cref="FuzzInputLayout"/>),
/// then acts as a device would, popping, reading, writing and completing chains and deciding on
/// notifications. <see cref="VirtqueueException"/> is the one expected exception; anything else, or a
/// broken <see cref="ChainInvariants"/>, escapes as a crash.</summary>
public static class VirtqueueFuzzTarget
{
    private const int AccessBytes = 512;

    // One mapping per thread, reused: mapping RAM per input would dominate the run time.
    [ThreadStatic] private static GuestMemory? t_memory;

    public static FuzzRunResult Run(ReadOnlySpan<byte> input)
    {
        var memory = t_memory ??= GuestMemory.Allocate([
            (FuzzInputLayout.FirstRegionAddress, FuzzInputLayout.RegionBytes),
            (FuzzInputLayout.SecondRegionAddress, FuzzInputLayout.RegionBytes)]);
        Span<byte> header = stackalloc byte[FuzzInputLayout.HeaderBytes];
        input[..Math.Min(input.Length, header.Length)].CopyTo(header);
        LoadRam(memory, input.Length > header.Length ? input[header.Length..] : []);

        var queue = new Virtqueue(Virtqueue.MaxQueueSize)
        {
            Size = (ushort)(1 << FuzzInputLayout.LogSize(header)),
            DescriptorTableAddress = FuzzInputLayout.DescriptorTableAddress(header),
            AvailableRingAddress = FuzzInputLayout.AvailableRingAddress(header),
            UsedRingAddress = FuzzInputLayout.UsedRingAddress(header),
            EventIdxEnabled = FuzzInputLayout.EventIdx(header),
            IndirectEnabled = FuzzInputLayout.Indirect(header),
            NextAvailableIndex = FuzzInputLayout.NextAvailableIndex(header),
        };
        queue.NextUsedIndex = FuzzInputLayout.NextUsedIndex(header);
        int completed = 0;
        try
        {
            queue.Validate(memory);
            queue.Ready = true;
            completed = ServeChains(memory, queue, FuzzInputLayout.MaxChains(header), FuzzInputLayout.AccessSeed(header));
            queue.ShouldNotify(memory);
            queue.DisableNotifications(memory);
            queue.UpdateAvailableEvent(memory);
            if (queue.EnableNotifications(memory)) ServeChains(memory, queue, 1, 0);
            return new FuzzRunResult(completed, Rejection: null);
        }
        catch (VirtqueueException rejection)
        {
            return new FuzzRunResult(completed, rejection.Message);
        }
    }

    private static void LoadRam(GuestMemory memory, ReadOnlySpan<byte> contents)
    {
        int regionBytes = (int)FuzzInputLayout.RegionBytes;
        var first = memory.GetSpan(FuzzInputLayout.FirstRegionAddress, regionBytes);
        var second = memory.GetSpan(FuzzInputLayout.SecondRegionAddress, regionBytes);
        first.Clear();
        second.Clear();
        contents[..Math.Min(contents.Length, regionBytes)].CopyTo(first);
        if (contents.Length > regionBytes) contents[regionBytes..Math.Min(contents.Length, 2 * regionBytes)].CopyTo(second);
    }

    private static int ServeChains(GuestMemory memory, Virtqueue queue, int maxChains, byte accessSeed)
    {
        Span<byte> buffer = stackalloc byte[AccessBytes];
        int completed = 0;
        while (completed < maxChains && queue.TryPopChain(memory, out var chain))
        {
            ChainInvariants.Check(memory, queue, chain);
            long offset = accessSeed * (completed + 1) % (chain.ReadableBytes + 1);
            int read = chain.Read(memory, offset, buffer[..(accessSeed * 7 % AccessBytes + 1)]);
            if (read != Math.Min(chain.ReadableBytes - offset, accessSeed * 7 % AccessBytes + 1))
                throw new InvalidOperationException($"Read returned {read} bytes from offset {offset} of {chain.ReadableBytes}");
            long writeOffset = accessSeed * (completed + 3) % (chain.WritableBytes + 1);
            int written = chain.Write(memory, writeOffset, buffer[..read]);
            if (written != Math.Min(chain.WritableBytes - writeOffset, read))
                throw new InvalidOperationException($"Write took {written} bytes at offset {writeOffset} of {chain.WritableBytes}");
            queue.AddUsed(memory, chain.HeadIndex, (uint)written);
            if (completed % 4 == 0) queue.ShouldNotify(memory);
            completed++;
        }
        return completed;
    }
}
