using System.Runtime.InteropServices;
using Vmm.Memory;

namespace Vmm.Devices.Virtio;

/// <summary>The buffers of one request, as the driver chained them: device-readable segments first,
/// then device-writable ones, with every segment already checked to lie in guest RAM.
/// The chain that <see cref="Virtqueue.TryPopChain"/> returns is reused by the queue: it is valid until
/// the next TryPopChain on that queue. A device that completes requests later keeps a <see cref="Clone"/>.</summary>
public sealed class DescriptorChain
{
    // The spec's bound on one chain: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in
    // total" (virtio 1.2 §2.7.5). It also keeps every byte count of a chain representable in the used
    // ring's 32-bit length once the device has written it.
    public const long MaxTotalBytes = 1L << 32;

    private readonly List<DescriptorSegment> _readable;
    private readonly List<DescriptorSegment> _writable;

    internal DescriptorChain()
    {
        _readable = [];
        _writable = [];
    }

    private DescriptorChain(DescriptorChain source)
    {
        _readable = [.. source._readable];
        _writable = [.. source._writable];
        HeadIndex = source.HeadIndex;
        ReadableBytes = source.ReadableBytes;
        WritableBytes = source.WritableBytes;
    }

    /// <summary>The descriptor index the driver put in the available ring; what goes back in AddUsed.</summary>
    public ushort HeadIndex { get; private set; }

    /// <summary>Device-readable (driver to device) segments, in chain order.</summary>
    public IReadOnlyList<DescriptorSegment> Readable => _readable;

    /// <summary>Device-writable segments, in chain order; in the chain they all follow the readable ones.</summary>
    public IReadOnlyList<DescriptorSegment> Writable => _writable;

    /// <summary>The readable segments without an enumerator allocation, for hot loops.</summary>
    public ReadOnlySpan<DescriptorSegment> ReadableSpan => CollectionsMarshal.AsSpan(_readable);

    public ReadOnlySpan<DescriptorSegment> WritableSpan => CollectionsMarshal.AsSpan(_writable);

    public long ReadableBytes { get; private set; }

    public long WritableBytes { get; private set; }

    /// <summary>An independent copy, for a device that holds a request past the next TryPopChain.</summary>
    public DescriptorChain Clone() => new(this);

    /// <summary>Copies from the readable part, starting <paramref name="offset"/> bytes into it as if its
    /// segments were one buffer. Returns the bytes copied: fewer than asked when the readable part ends.</summary>
    public int Read(GuestMemory memory, long offset, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        int copied = 0;
        foreach (var segment in ReadableSpan)
        {
            if (copied == destination.Length) break;
            if (offset >= segment.Length)
            {
                offset -= segment.Length;
                continue;
            }
            int chunk = (int)Math.Min(segment.Length - offset, destination.Length - copied);
            memory.Read(segment.Address + (ulong)offset, destination.Slice(copied, chunk));
            copied += chunk;
            offset = 0;
        }
        return copied;
    }

    /// <summary>Copies into the writable part at logical <paramref name="offset"/>, recording the pages in
    /// the device dirty bitmap. Returns the bytes copied: fewer than given when the writable part ends.</summary>
    public int Write(GuestMemory memory, long offset, ReadOnlySpan<byte> source)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        int copied = 0;
        foreach (var segment in WritableSpan)
        {
            if (copied == source.Length) break;
            if (offset >= segment.Length)
            {
                offset -= segment.Length;
                continue;
            }
            int chunk = (int)Math.Min(segment.Length - offset, source.Length - copied);
            memory.WriteFromDevice(segment.Address + (ulong)offset, source.Slice(copied, chunk));
            copied += chunk;
            offset = 0;
        }
        return copied;
    }

    /// <summary>Empties the chain for the next pop, keeping the lists' storage.</summary>
    internal void Start(ushort headIndex)
    {
        HeadIndex = headIndex;
        _readable.Clear();
        _writable.Clear();
        ReadableBytes = 0;
        WritableBytes = 0;
    }

    /// <summary>Adds a segment whose range the queue has checked, enforcing the chain-wide rules.</summary>
    internal void Append(DescriptorSegment segment, bool deviceWritable)
    {
        if (deviceWritable)
        {
            _writable.Add(segment);
            WritableBytes += segment.Length;
        }
        else
        {
            // §2.7.4.2: "The driver MUST place any device-writable descriptor elements after any
            // device-readable descriptor elements." A device that trusted the order would hand the
            // guest's request header to code expecting the response buffer.
            if (_writable.Count > 0)
                throw new VirtqueueException(
                    $"descriptor chain with head {HeadIndex} has a device-readable buffer after a device-writable one");
            _readable.Add(segment);
            ReadableBytes += segment.Length;
        }
        if (ReadableBytes + WritableBytes > MaxTotalBytes)
            throw new VirtqueueException($"descriptor chain with head {HeadIndex} is longer than 2^32 bytes in total");
    }
}
