using System.Runtime.InteropServices;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>An AF_PACKET socket bound to one network interface: the host's end of a TAP in the tests.
/// A frame sent here leaves through the interface, so the TAP's file descriptor reads it; a frame written
/// to the TAP's file descriptor enters the host through the interface, so this socket receives it.</summary>
internal sealed unsafe partial class PacketSocket : IDisposable
{
    private const int AfPacket = 17, SockRaw = 3, SockCloexec = 0x80000;
    private const ushort EthPAllNetworkOrder = 0x0300; // htons(ETH_P_ALL)
    private const byte PacketOutgoing = 4;             // sll_pkttype of frames the host itself sends
    private const short PollIn = 0x001;
    private const int MaxFrameBytes = 65536;

    private readonly int _fd;

    private PacketSocket(int fd) => _fd = fd;

    public static PacketSocket Open(string interfaceName)
    {
        int index = int.Parse(File.ReadAllText($"/sys/class/net/{interfaceName}/ifindex").Trim());
        int fd = Socket(AfPacket, SockRaw | SockCloexec, EthPAllNetworkOrder);
        if (fd < 0) throw new IOException($"socket(AF_PACKET): errno {Marshal.GetLastPInvokeError()}");
        var address = new SockaddrLl { Family = AfPacket, Protocol = EthPAllNetworkOrder, InterfaceIndex = index };
        if (Bind(fd, &address, sizeof(SockaddrLl)) < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            Close(fd);
            throw new IOException($"bind(AF_PACKET, {interfaceName}): errno {errno}");
        }
        return new PacketSocket(fd);
    }

    public void Send(ReadOnlySpan<byte> frame)
    {
        fixed (byte* data = frame)
            if (SendNative(_fd, data, (nuint)frame.Length, 0) != frame.Length)
                throw new IOException($"send(AF_PACKET): errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>The first frame entering the host through the interface that <paramref name="match"/>
    /// accepts, or null when none came within <paramref name="timeout"/>. Other frames are skipped.</summary>
    public byte[]? Receive(Func<byte[], bool> match, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var buffer = new byte[MaxFrameBytes];
        while (WaitReadable(_fd, deadline - DateTime.UtcNow))
        {
            SockaddrLl from;
            int fromLength = sizeof(SockaddrLl);
            nint length;
            fixed (byte* data = buffer) length = ReceiveNative(_fd, data, (nuint)buffer.Length, 0, &from, &fromLength);
            if (length < 0) throw new IOException($"recvfrom(AF_PACKET): errno {Marshal.GetLastPInvokeError()}");
            if (from.PacketType == PacketOutgoing) continue;
            byte[] frame = buffer.AsSpan(0, (int)length).ToArray();
            if (match(frame)) return frame;
        }
        return null;
    }

    /// <summary>poll(2) for POLLIN on any descriptor; false when the time ran out.</summary>
    public static bool WaitReadable(int fd, TimeSpan timeout)
    {
        var entry = new PollFd { Fd = fd, Events = PollIn };
        int timeoutMs = (int)Math.Max(0, Math.Ceiling(timeout.TotalMilliseconds));
        int ready;
        do ready = Poll(&entry, 1, timeoutMs);
        while (ready < 0 && Marshal.GetLastPInvokeError() == 4); // EINTR
        if (ready < 0) throw new IOException($"poll: errno {Marshal.GetLastPInvokeError()}");
        return ready > 0 && (entry.ReturnedEvents & PollIn) != 0;
    }

    public void Dispose() => Close(_fd);

    /// <summary>struct sockaddr_ll (20 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct SockaddrLl
    {
        public ushort Family;
        public ushort Protocol;
        public int InterfaceIndex;
        public ushort HardwareType;
        public byte PacketType;
        public byte AddressLength;
        public uint AddressLow, AddressHigh;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short ReturnedEvents;
    }

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    private static partial int Socket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    private static partial int Bind(int fd, SockaddrLl* address, int addressLength);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    private static partial nint SendNative(int fd, byte* data, nuint length, int flags);

    [LibraryImport("libc", EntryPoint = "recvfrom", SetLastError = true)]
    private static partial nint ReceiveNative(int fd, byte* data, nuint length, int flags, SockaddrLl* from, int* fromLength);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(PollFd* entries, nuint count, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
