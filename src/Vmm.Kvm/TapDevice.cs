using System.Runtime.InteropServices;
using System.Text;
using Vmm.Kvm.Interop;

namespace Vmm.Kvm;

/// <summary>A TAP network interface (<c>/dev/net/tun</c>, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR): each read or
/// write is one Ethernet frame preceded by a virtio-net header, the same header a virtio-net driver uses,
/// so frames move between the TAP and guest buffers without reformatting.</summary>
public sealed unsafe class TapDevice : IDisposable
{
    private const string TunPath = "/dev/net/tun";
    private const short IffTap = 0x0002, IffNoPi = 0x1000, IffVnetHdr = 0x4000;
    private const int IfNameSize = 16, IfReqSize = 40;
    // _IOW('T', 202, int), _IOW('T', 216, int), _IOW('T', 208, unsigned int)
    private const nuint TunSetIff = 0x400454ca, TunSetVnetHdrSz = 0x400454d8, TunSetOffload = 0x400454d0;

    private readonly FileDescriptorHandle _fd;

    private TapDevice(FileDescriptorHandle fd, string name)
    {
        _fd = fd;
        Name = name;
    }

    public string Name { get; }
    public int Number => _fd.Number;

    /// <summary>Attaches to (or, with CAP_NET_ADMIN, creates) the TAP interface <paramref name="name"/>.</summary>
    public static TapDevice Open(string name, int vnetHeaderBytes)
    {
        if (name.Length == 0 || Encoding.ASCII.GetByteCount(name) >= IfNameSize)
            throw new PosixException("TUNSETIFF", 22, $"TAP name '{name}' must be 1 to {IfNameSize - 1} characters");
        int fd = Libc.Open(TunPath, Libc.O_RDWR | Libc.O_CLOEXEC | Libc.O_NONBLOCK);
        if (fd < 0)
            throw PosixException.FromLastError("open", $"{TunPath}: is the tun module loaded (modprobe tun)?");
        var handle = new FileDescriptorHandle(fd);
        try
        {
            byte* ifreq = stackalloc byte[IfReqSize];
            new Span<byte>(ifreq, IfReqSize).Clear();
            Encoding.ASCII.GetBytes(name, new Span<byte>(ifreq, IfNameSize));
            *(short*)(ifreq + IfNameSize) = IffTap | IffNoPi | IffVnetHdr;
            if (Libc.Ioctl(fd, TunSetIff, ifreq) < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                throw new PosixException("TUNSETIFF", errno, errno == Libc.EPERM
                    ? $"cannot attach to TAP '{name}': create it first (ip tuntap add dev {name} mode tap user $USER) or run vmm with CAP_NET_ADMIN"
                    : $"cannot attach to TAP '{name}'");
            }
            int headerBytes = vnetHeaderBytes;
            if (Libc.Ioctl(fd, TunSetVnetHdrSz, &headerBytes) < 0) throw PosixException.FromLastError("TUNSETVNETHDRSZ");
            var tap = new TapDevice(handle, name);
            // No offloads until a driver accepts them: full checksums, no segmentation, which any guest handles.
            tap.SetOffloads(TapOffloads.None);
            return tap;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>TUNSETOFFLOAD: which offloaded frames (partial checksums, TSO super-frames) the TAP may
    /// hand to the VMM; frames the VMM writes may always use them, as described by their header.</summary>
    public void SetOffloads(TapOffloads offloads)
    {
        if (Libc.Ioctl(_fd.Number, TunSetOffload, (nuint)offloads) < 0) throw PosixException.FromLastError("TUNSETOFFLOAD", $"TAP {Name}");
    }

    /// <summary>Reads one frame (header + packet) into the buffers; returns its length, or 0 when none is waiting.</summary>
    public int Read(ReadOnlySpan<IoVec> buffers)
    {
        fixed (IoVec* v = buffers)
        {
            nint read = Libc.Readv(_fd.Number, v, buffers.Length);
            if (read >= 0) return (int)read;
            int errno = Marshal.GetLastPInvokeError();
            if (errno == Libc.EAGAIN) return 0;
            throw new PosixException("readv", errno, $"TAP {Name}");
        }
    }

    /// <summary>Writes one frame (header + packet) gathered from the buffers.</summary>
    public void Write(ReadOnlySpan<IoVec> buffers)
    {
        fixed (IoVec* v = buffers)
        {
            if (Libc.Writev(_fd.Number, v, buffers.Length) >= 0) return;
            int errno = Marshal.GetLastPInvokeError();
            // Dropped, as a NIC would, the guest's TCP retransmitting: a full TAP queue (EAGAIN), a TAP the
            // host has not brought up (EIO, no link), a frame tun rejects (EINVAL: shorter than an Ethernet
            // header, or a virtio-net header the guest got wrong). None of them is the VMM failing.
            if (errno is Libc.EAGAIN or Libc.EIO or Libc.EINVAL) return;
            throw new PosixException("writev", errno, $"TAP {Name}");
        }
    }

    /// <summary>Writes one frame (header + packet) from one buffer.</summary>
    public void Write(ReadOnlySpan<byte> frame)
    {
        fixed (byte* bytes = frame)
        {
            var vector = new IoVec { Base = (nint)bytes, Length = (nuint)frame.Length };
            Write(new ReadOnlySpan<IoVec>(in vector));
        }
    }

    public void Dispose() => _fd.Dispose();
}

/// <summary>TUN_F_* flags of TUNSETOFFLOAD (linux/if_tun.h).</summary>
[Flags]
public enum TapOffloads : uint
{
    None = 0,
    Checksum = 0x01,
    Tso4 = 0x02,
    Tso6 = 0x04,
}
