using System.Buffers.Binary;
using Vmm.Kvm;
using Vmm.Kvm.Interop;
using Vmm.Memory;

namespace Vmm.Devices.Virtio;

/// <summary>virtio-net on a TAP device (virtio 1.2, section 5.1): one receive and one transmit queue,
/// a MAC address and link status. Frames go between the TAP and guest buffers with readv/writev, the
/// virtio-net header included (the TAP speaks the same header), so there is no copy in the VMM.</summary>
public sealed class VirtioNet : IVirtioDevice, IVirtioBackendEvents, IGuestOutputSink, IDisposable
{
    public const int ReceiveQueue = 0, TransmitQueue = 1;
    public const ushort QueueSize = 256;
    /// <summary>struct virtio_net_hdr_v1 (num_buffers included, as VERSION_1 requires).</summary>
    public const int HeaderBytes = 12;
    private const int NumBuffersOffset = 10;
    /// <summary>IOV_MAX: readv/writev take no more. Linux uses a few dozen segments per frame at most.</summary>
    private const int MaxSegments = 1024;

    public const ulong FeatureMac = 1UL << 5, FeatureStatus = 1UL << 16;
    // Offloads (5.1.3): the driver may send partial checksums and TSO frames (CSUM, HOST_TSO*), and take
    // them (GUEST_CSUM, GUEST_TSO*). The virtio-net header carries the details through the TAP unchanged.
    public const ulong FeatureCsum = 1UL << 0, FeatureGuestCsum = 1UL << 1, FeatureGuestTso4 = 1UL << 7, FeatureGuestTso6 = 1UL << 8;
    public const ulong FeatureHostTso4 = 1UL << 11, FeatureHostTso6 = 1UL << 12;
    public const ulong OffloadFeatures = FeatureCsum | FeatureGuestCsum | FeatureGuestTso4 | FeatureGuestTso6 | FeatureHostTso4 | FeatureHostTso6;
    private const ushort StatusLinkUp = 1;

    private readonly TapDevice _tap;
    private readonly IoVec[] _vectors = new IoVec[MaxSegments];
    private const int MaxHeldFrameBytes = 128 << 10;

    private readonly GuestOutputGate _output;
    private VirtioActivation? _activation;

    /// <param name="output">Transmitted frames leave through it (held per epoch while the VM is replicated).</param>
    public VirtioNet(NetworkConfig config, GuestOutputGate output)
    {
        Config = config;
        _output = output;
        try
        {
            _tap = TapDevice.Open(config.TapName, HeaderBytes);
        }
        catch (PosixException e)
        {
            throw new ConfigurationException($"--net tap={config.TapName}: {e.Message}", e);
        }
        BackendEvents = [(_tap.Number, OnTapReadable)];
    }

    public NetworkConfig Config { get; }
    public VirtioDeviceType Type => VirtioDeviceType.Net;
    public ulong OfferedFeatures => VirtioFeatures.Common | FeatureMac | FeatureStatus | OffloadFeatures;
    public IReadOnlyList<ushort> QueueMaxSizes { get; } = [QueueSize, QueueSize];
    public IReadOnlyList<(int Fd, Action OnReadable)> BackendEvents { get; }

    /// <summary>struct virtio_net_config: mac[6], then status (link up).</summary>
    public void ReadConfig(int offset, Span<byte> data)
    {
        Span<byte> config = stackalloc byte[8];
        Config.Mac.CopyTo(config);
        BinaryPrimitives.WriteUInt16LittleEndian(config[6..], StatusLinkUp);
        VirtioConfigSpace.Read(config, offset, data);
    }

    public void WriteConfig(int offset, ReadOnlySpan<byte> data) { }

    public void Activate(VirtioActivation activation)
    {
        _activation = activation;
        _tap.SetOffloads(ReceiveOffloads(activation.AcknowledgedFeatures));
    }

    public void Reset()
    {
        _activation = null;
        _tap.SetOffloads(TapOffloads.None);
    }

    /// <summary>What the TAP may deliver: only the offloaded frames the driver said it can take
    /// (TSO needs checksum offload too, in the TAP as in virtio).</summary>
    public static TapOffloads ReceiveOffloads(ulong acknowledged)
    {
        if ((acknowledged & FeatureGuestCsum) == 0) return TapOffloads.None;
        var offloads = TapOffloads.Checksum;
        if ((acknowledged & FeatureGuestTso4) != 0) offloads |= TapOffloads.Tso4;
        if ((acknowledged & FeatureGuestTso6) != 0) offloads |= TapOffloads.Tso6;
        return offloads;
    }

    public void ProcessQueue(int index)
    {
        if (index == ReceiveQueue) OnTapReadable(); // new receive buffers: frames may be waiting for them
        else if (index == TransmitQueue) Transmit();
    }

    private void Transmit()
    {
        if (_activation is not { } active || active.Queues[TransmitQueue] is not { } queue) return;
        GuestMemory memory = active.Memory;
        do
        {
            while (queue.TryPopChain(memory, out var chain))
            {
                if (chain.ReadableBytes > HeaderBytes)
                {
                    if (_output.IsHolding)
                    {
                        // Longer than tun takes (64 KiB of TSO payload and headers): tun would refuse it, so it is dropped.
                        if (chain.ReadableBytes <= MaxHeldFrameBytes) _output.Hold(this, CopyFrame(memory, chain.ReadableSpan, chain.ReadableBytes));
                    }
                    else _tap.Write(_vectors.AsSpan(0, Gather(memory, chain.ReadableSpan)));
                }
                queue.AddUsed(memory, chain.HeadIndex, 0);
            }
        }
        while (queue.EnableNotifications(memory));
        if (queue.ShouldNotify(memory)) active.SignalUsedBuffers();
    }

    /// <summary>Moves waiting frames into receive buffers until the TAP is empty or the guest has no buffer
    /// left (then the next receive-queue kick resumes). The TAP is watched edge-triggered.</summary>
    private void OnTapReadable()
    {
        if (_activation is not { } active || active.Queues[ReceiveQueue] is not { } queue) return;
        GuestMemory memory = active.Memory;
        bool used = false;
        while (true)
        {
            bool tapEmpty = false;
            while (queue.TryPopChain(memory, out var chain))
            {
                if (chain.WritableBytes < HeaderBytes)
                    throw new VirtqueueException($"receive buffer of {chain.WritableBytes} bytes cannot hold the {HeaderBytes}-byte header");
                int count = Gather(memory, chain.WritableSpan);
                int length = _tap.Read(_vectors.AsSpan(0, count));
                if (length == 0)
                {
                    // Nothing waiting: give the buffer back for the next frame.
                    queue.NextAvailableIndex--;
                    tapEmpty = true;
                    break;
                }
                MarkReceived(memory, chain.WritableSpan, length);
                chain.Write(memory, NumBuffersOffset, [1, 0]);
                queue.AddUsed(memory, chain.HeadIndex, (uint)length);
                used = true;
            }
            if (tapEmpty)
            {
                queue.UpdateAvailableEvent(memory);
                break;
            }
            // Out of receive buffers with frames perhaps waiting: ask for a kick when the driver adds
            // some, and go on at once if it already did.
            if (!queue.EnableNotifications(memory)) break;
        }
        if (used && queue.ShouldNotify(memory)) active.SignalUsedBuffers();
    }

    private int Gather(GuestMemory memory, ReadOnlySpan<DescriptorSegment> segments)
    {
        // More would be silently cut off, truncating the frame (or hiding the header from the TAP).
        if (segments.Length > MaxSegments)
            throw new VirtqueueException($"a network buffer of {segments.Length} segments exceeds the {MaxSegments} vmm supports");
        int count = segments.Length;
        for (int i = 0; i < count; i++) _vectors[i] = memory.ToIoVec(segments[i].Address, segments[i].Length);
        return count;
    }

    /// <summary>A held frame must outlive its buffers: the guest reuses them as soon as they are used.</summary>
    private static byte[] CopyFrame(GuestMemory memory, ReadOnlySpan<DescriptorSegment> segments, long bytes)
    {
        if (segments.Length > MaxSegments)
            throw new VirtqueueException($"a network buffer of {segments.Length} segments exceeds the {MaxSegments} vmm supports");
        var frame = new byte[bytes];
        int at = 0;
        foreach (var segment in segments)
        {
            memory.Read(segment.Address, frame.AsSpan(at, (int)segment.Length));
            at += (int)segment.Length;
        }
        return frame;
    }

    /// <summary>A held frame's commit: it leaves for the TAP.</summary>
    public void WriteNow(ReadOnlySpan<byte> frame) => _tap.Write(frame);

    private static void MarkReceived(GuestMemory memory, ReadOnlySpan<DescriptorSegment> segments, long length)
    {
        foreach (var segment in segments)
        {
            if (length <= 0) break;
            long bytes = Math.Min(segment.Length, length);
            memory.MarkDirty(segment.Address, (ulong)bytes);
            length -= bytes;
        }
    }

    public void Dispose() => _tap.Dispose();
}
