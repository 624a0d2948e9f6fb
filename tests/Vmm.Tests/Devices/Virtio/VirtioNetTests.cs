using System.Buffers.Binary;
using System.Diagnostics;
using Vmm.Devices;
using Vmm.Devices.Virtio;
using Vmm.Diagnostics;
using Vmm.Memory;
using Xunit;
using static Vmm.Devices.Virtio.VirtioMmioTransport;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>virtio-net on a real TAP (needs root, or CAP_NET_ADMIN, and /dev/net/tun), driven the way
/// Linux's virtio_net drives it. Each test creates its own non-persistent TAP, named vmmt{pid}{n}, which
/// disappears when the device closes it; the TAP gets no address and no route, IPv6 is switched off on
/// it, and the host side talks to it with an AF_PACKET socket, so the host's network is never touched.
/// Frames use the IEEE local experimental ethertype 0x88b5 and a per-test nonce, so a stray frame from
/// the host cannot be mistaken for the test's.</summary>
public sealed class VirtioNetTests : IDisposable
{
    private const ushort RingSize = 16;
    private const ushort TestEthertype = 0x88b5;
    private const int ReceiveBufferBytes = 1600;
    private static readonly TimeSpan FrameTimeout = TimeSpan.FromSeconds(5);
    private static readonly byte[] GuestMac = [0x02, 0x00, 0x00, 0x12, 0x34, 0x56];
    private static readonly byte[] HostMac = [0x02, 0x00, 0x00, 0xab, 0xcd, 0xef];
    private static int s_tapCount;

    private readonly string _tapName = $"vmmt{Environment.ProcessId % 10000}{Interlocked.Increment(ref s_tapCount)}";
    private readonly GuestMemory _memory = GuestMemory.Allocate([(0, 1UL << 20)]);
    private readonly StringWriter _log = new();
    private readonly CountingInterruptLine _interrupt = new();
    private readonly VirtioNet _net;
    private readonly VirtioMmioTransport _transport;
    private readonly MmioDriver _driver;
    private readonly ulong _nonce = (ulong)Random.Shared.NextInt64();
    private int _framesBuilt;
    private int _receiveBuffersPosted;
    private SplitRingDriver _rx = null!, _tx = null!;

    public VirtioNetTests()
    {
        _net = new VirtioNet(new NetworkConfig(_tapName, GuestMac), new GuestOutputGate());
        _transport = new VirtioMmioTransport("virtio-net0", _net, _memory, _interrupt, new Logger(_log, LogLevel.Debug));
        _driver = new MmioDriver(_transport, _memory);
    }

    public void Dispose()
    {
        _net.Dispose();
        _memory.Dispose();
        // Closing the only file descriptor removes a non-persistent TAP, though not always at once: make sure
        // of it, and let a TAP the kernel removed meanwhile be ("Cannot find device").
        if (Directory.Exists($"/sys/class/net/{_tapName}")) HostCommand.Run("ip", "link", "del", "dev", _tapName);
    }

    private void Start(ulong extraFeatures = 0)
    {
        var rings = _driver.Initialize(VirtioFeatures.Version1 | VirtioNet.FeatureMac | VirtioNet.FeatureStatus | extraFeatures, RingSize, RingSize);
        (_rx, _tx) = (rings[VirtioNet.ReceiveQueue], rings[VirtioNet.TransmitQueue]);
    }

    private void BringTapUp()
    {
        // Without IPv6 the kernel sends nothing on its own (no router solicitations, no MLD reports).
        string disableIpv6 = $"/proc/sys/net/ipv6/conf/{_tapName}/disable_ipv6";
        if (File.Exists(disableIpv6)) File.WriteAllText(disableIpv6, "1");
        RunIp($"link set dev {_tapName} up");
    }

    private static void RunIp(string arguments)
    {
        using var process = Process.Start(new ProcessStartInfo("ip", arguments) { RedirectStandardError = true })!;
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new InvalidOperationException($"ip {arguments}: {error}");
    }

    /// <summary>An Ethernet frame of the test's ethertype whose payload starts with the nonce and a sequence number.</summary>
    private byte[] BuildFrame(byte[] destination, byte[] source, int payloadBytes = 100)
    {
        var frame = new byte[14 + payloadBytes];
        destination.CopyTo(frame, 0);
        source.CopyTo(frame, 6);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), TestEthertype);
        BinaryPrimitives.WriteUInt64LittleEndian(frame.AsSpan(14), _nonce);
        BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(22), _framesBuilt++);
        for (int i = 26; i < frame.Length; i++) frame[i] = (byte)i;
        return frame;
    }

    private bool IsOurs(ReadOnlySpan<byte> frame) =>
        frame.Length >= 26 && BinaryPrimitives.ReadUInt16BigEndian(frame[12..]) == TestEthertype
        && BinaryPrimitives.ReadUInt64LittleEndian(frame[14..]) == _nonce;

    private static ulong ReceiveHeaderAddress(int buffer) => MmioDriver.BufferAddress + (ulong)buffer * 0x1000;
    private static ulong ReceiveDataAddress(int buffer) => ReceiveHeaderAddress(buffer) + 0x100;

    /// <summary>A receive buffer as two device-writable segments (header, then room for a frame); returns its head.</summary>
    private ushort PostReceiveBuffer()
    {
        int buffer = _receiveBuffersPosted++;
        _memory.Fill(ReceiveHeaderAddress(buffer), VirtioNet.HeaderBytes, 0xee);
        return _rx.AddChain(new DriverBuffer(ReceiveHeaderAddress(buffer), VirtioNet.HeaderBytes, true),
            new DriverBuffer(ReceiveDataAddress(buffer), ReceiveBufferBytes, true));
    }

    /// <summary>What the event loop does when the TAP becomes readable.</summary>
    private void DeliverWaitingFrames()
    {
        var (fd, onReadable) = Assert.Single(_net.BackendEvents);
        Assert.True(PacketSocket.WaitReadable(fd, FrameTimeout), "no frame reached the TAP");
        _transport.RunDeviceWork("tap", onReadable);
    }

    /// <summary>The used receive entries that hold one of this test's frames: (buffer number, used length, header, frame).</summary>
    private List<(int Buffer, uint Length, byte[] Header, byte[] Frame)> ReceivedFrames()
    {
        var frames = new List<(int, uint, byte[], byte[])>();
        for (ushort i = 0; i != _rx.UsedIndex; i++)
        {
            var (id, length) = _rx.UsedElement(i);
            int buffer = (int)id / 2; // two descriptors per buffer, handed out in order
            var header = new byte[VirtioNet.HeaderBytes];
            _memory.Read(ReceiveHeaderAddress(buffer), header);
            var frame = new byte[Math.Max(0, (int)length - VirtioNet.HeaderBytes)];
            _memory.Read(ReceiveDataAddress(buffer), frame);
            if (IsOurs(frame)) frames.Add((buffer, length, header, frame));
        }
        return frames;
    }

    private ulong TransmitBuffer(int index) => MmioDriver.BufferAddress + 0x40000 + (ulong)index * 0x1000;

    /// <summary>A transmit chain as Linux sends it without offloads: a zeroed header, then the frame, here
    /// split after the Ethernet header to exercise the gather.</summary>
    private ushort PostTransmit(int index, byte[] frame)
    {
        ulong address = TransmitBuffer(index);
        _memory.Fill(address, VirtioNet.HeaderBytes, 0);
        _memory.Write(address + 0x100, frame.AsSpan(0, 14));
        _memory.Write(address + 0x200, frame.AsSpan(14));
        return _tx.AddChain(new DriverBuffer(address, VirtioNet.HeaderBytes, false),
            new DriverBuffer(address + 0x100, 14, false), new DriverBuffer(address + 0x200, (uint)frame.Length - 14, false));
    }

    [Fact]
    public void Identification_IsANetDeviceWithTwoQueuesOfferingMacAndStatus()
    {
        Assert.Equal(1u, _driver.Read(RegDeviceId));
        ulong features = _driver.ReadDeviceFeatures();
        Assert.Equal(VirtioNet.FeatureMac | VirtioNet.FeatureStatus | VirtioFeatures.Version1,
            features & (VirtioNet.FeatureMac | VirtioNet.FeatureStatus | VirtioFeatures.Version1));
        _driver.Write(RegQueueSel, 0);
        Assert.Equal((uint)VirtioNet.QueueSize, _driver.Read(RegQueueNumMax));
        _driver.Write(RegQueueSel, 1);
        Assert.Equal((uint)VirtioNet.QueueSize, _driver.Read(RegQueueNumMax));
        _driver.Write(RegQueueSel, 2);
        Assert.Equal(0u, _driver.Read(RegQueueNumMax));
    }

    [Fact]
    public void ConfigSpace_HoldsTheMacAndLinkUp()
    {
        // virtio_cread_bytes reads the MAC a byte at a time; status is a 16-bit field.
        byte[] mac = Enumerable.Range(0, 6).Select(i => _driver.ReadConfig(i, 1)[0]).ToArray();
        ushort status = BinaryPrimitives.ReadUInt16LittleEndian(_driver.ReadConfig(6, 2));
        Assert.Equal(GuestMac, mac);
        Assert.Equal(1, status); // VIRTIO_NET_S_LINK_UP
    }

    [Fact]
    public void Receive_AFrameEnteringTheTap_LandsInAPostedBufferAfterAVirtioNetHeader()
    {
        Start();
        BringTapUp();
        using var host = PacketSocket.Open(_tapName);
        for (int i = 0; i < 4; i++) PostReceiveBuffer();
        _driver.Kick(VirtioNet.ReceiveQueue); // nothing waiting yet: the buffers stay posted
        Assert.Equal(0, _rx.UsedIndex);
        byte[] frame = BuildFrame(GuestMac, HostMac);

        host.Send(frame);
        DeliverWaitingFrames();

        var (_, length, header, received) = Assert.Single(ReceivedFrames());
        Assert.Equal(frame, received);
        Assert.Equal((uint)(VirtioNet.HeaderBytes + frame.Length), length);
        Assert.Equal(new byte[10], header[..10]); // no checksum offload, no GSO
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(10))); // num_buffers
        Assert.Equal(InterruptUsedBuffer, _driver.InterruptStatus & InterruptUsedBuffer);
        Assert.True(_interrupt.Triggers >= 1);
    }

    [Fact]
    public void Receive_AFrameWaitingWithNoBufferPosted_IsDeliveredOnceTheDriverPostsOneAndKicks()
    {
        Start();
        BringTapUp();
        using var host = PacketSocket.Open(_tapName);
        byte[] frame = BuildFrame(GuestMac, HostMac);
        host.Send(frame);
        DeliverWaitingFrames();
        Assert.Equal(0, _rx.UsedIndex);
        Assert.Equal(0, _interrupt.Triggers);

        PostReceiveBuffer();
        _driver.Kick(VirtioNet.ReceiveQueue);

        var (buffer, _, _, received) = Assert.Single(ReceivedFrames());
        Assert.Equal(0, buffer);
        Assert.Equal(frame, received);
        Assert.Equal(1, _interrupt.Triggers);
    }

    [Fact]
    public void Receive_WithEventIdx_DeviceOutOfBuffersAsksForTheKickThatDeliversTheNextFrame()
    {
        Start(VirtioFeatures.RingEventIndex);
        BringTapUp();
        using var host = PacketSocket.Open(_tapName);
        ushort before = _rx.AvailableIndex;
        PostReceiveBuffer();
        Assert.True(_driver.KickIfNeeded(VirtioNet.ReceiveQueue, _rx, before, eventIdx: true));
        byte[] first = BuildFrame(GuestMac, HostMac), second = BuildFrame(GuestMac, HostMac);
        host.Send(first);
        host.Send(second);
        DeliverWaitingFrames();
        Assert.Equal([first], ReceivedFrames().Select(f => f.Frame));

        // try_fill_recv refills and kicks only if the device asked (avail_event).
        before = _rx.AvailableIndex;
        PostReceiveBuffer();
        bool kicked = _driver.KickIfNeeded(VirtioNet.ReceiveQueue, _rx, before, eventIdx: true);

        Assert.True(kicked, "the device ran out of receive buffers without asking for a kick");
        Assert.Equal([first, second], ReceivedFrames().Select(f => f.Frame));
    }

    [Fact]
    public void Transmit_AChainOfHeaderAndFrameLeavesThroughTheTap()
    {
        Start();
        BringTapUp();
        using var host = PacketSocket.Open(_tapName);
        byte[] frame = BuildFrame(HostMac, GuestMac, payloadBytes: 300);
        ushort head = PostTransmit(0, frame);

        _driver.Kick(VirtioNet.TransmitQueue);

        Assert.Equal(frame, host.Receive(f => IsOurs(f), FrameTimeout));
        Assert.Equal(1, _tx.UsedIndex);
        Assert.Equal(((uint)head, 0u), _tx.UsedElement(0));
        Assert.Equal(1, _interrupt.Triggers);
    }

    [Fact]
    public void Transmit_WithEventIdx_EveryFrameOfADriverThatKicksOnlyWhenAskedLeaves()
    {
        Start(VirtioFeatures.RingEventIndex);
        BringTapUp();
        using var host = PacketSocket.Open(_tapName);
        var frames = Enumerable.Range(0, 3).Select(_ => BuildFrame(HostMac, GuestMac)).ToArray();

        for (int i = 0; i < frames.Length; i++)
        {
            ushort before = _tx.AvailableIndex;
            PostTransmit(i, frames[i]);
            _driver.KickIfNeeded(VirtioNet.TransmitQueue, _tx, before, eventIdx: true);
        }

        foreach (byte[] frame in frames)
            Assert.Equal(frame, host.Receive(f => f.AsSpan().SequenceEqual(frame), FrameTimeout));
        Assert.Equal(3, _tx.UsedIndex);
    }

    [Fact]
    public void Transmit_WhileTheTapIsDown_DropsTheFrameAndCompletesTheChain()
    {
        // The host has not brought the TAP up yet (tun answers writes with EIO): a NIC without link drops
        // frames; the VMM must not fail or stop serving the queue.
        Start();
        PostTransmit(0, BuildFrame(HostMac, GuestMac));

        Assert.Null(Record.Exception(() => _driver.Kick(VirtioNet.TransmitQueue)));

        Assert.Equal(1, _tx.UsedIndex);
        Assert.Equal(0u, _driver.Status & StatusDeviceNeedsReset);
        BringTapUp();
        using var host = PacketSocket.Open(_tapName);
        byte[] frame = BuildFrame(HostMac, GuestMac);
        PostTransmit(1, frame);
        _driver.Kick(VirtioNet.TransmitQueue);
        Assert.Equal(frame, host.Receive(f => IsOurs(f), FrameTimeout));
    }

    [Theory]
    [InlineData("checksum position past the frame")]
    [InlineData("frame shorter than an Ethernet header")]
    public void Transmit_AFrameTunRejects_IsDroppedAndTheQueueKeepsServing(string malformation)
    {
        // tun refuses such a write (EINVAL). That is the guest's frame being bad, not the VMM failing.
        Start();
        BringTapUp();
        using var host = PacketSocket.Open(_tapName);
        ulong header = TransmitBuffer(0);
        if (malformation == "frame shorter than an Ethernet header")
        {
            _memory.Fill(header, VirtioNet.HeaderBytes + 6, 0);
            _tx.AddChain(new DriverBuffer(header, VirtioNet.HeaderBytes + 6, false));
        }
        else
        {
            PostTransmit(0, BuildFrame(HostMac, GuestMac));
            _memory.Write(header, (byte)1);          // VIRTIO_NET_HDR_F_NEEDS_CSUM
            _memory.Write(header + 6, (ushort)4000); // csum_start
            _memory.Write(header + 8, (ushort)4000); // csum_offset
        }

        Assert.Null(Record.Exception(() => _driver.Kick(VirtioNet.TransmitQueue)));

        Assert.Equal(1, _tx.UsedIndex);
        Assert.Equal(0u, _driver.Status & StatusDeviceNeedsReset);
        byte[] frame = BuildFrame(HostMac, GuestMac);
        PostTransmit(1, frame);
        _driver.Kick(VirtioNet.TransmitQueue);
        Assert.Equal(frame, host.Receive(f => IsOurs(f), FrameTimeout));
    }

    [Fact]
    public void Receive_BufferTooSmallForTheHeader_PutsTheDeviceInNeedsReset()
    {
        Start();
        BringTapUp();
        using var host = PacketSocket.Open(_tapName);
        _rx.AddChain(new DriverBuffer(ReceiveHeaderAddress(0), VirtioNet.HeaderBytes - 2, true));
        host.Send(BuildFrame(GuestMac, HostMac));

        Assert.Null(Record.Exception(DeliverWaitingFrames));

        Assert.Equal(StatusDeviceNeedsReset, _driver.Status & StatusDeviceNeedsReset);
        Assert.Equal(0, _rx.UsedIndex);
    }
}
