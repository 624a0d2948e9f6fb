using System.Runtime.InteropServices;
using Vmm.Kvm.Interop;

namespace Vmm.Kvm;

/// <summary>A Linux eventfd: the doorbell between KVM (ioeventfd, irqfd) and the VMM's threads.</summary>
public sealed unsafe class EventFd : IDisposable
{
    private readonly FileDescriptorHandle _fd;

    public EventFd(bool nonBlocking = true)
    {
        int fd = Libc.EventFd(0, Libc.EFD_CLOEXEC | (nonBlocking ? Libc.EFD_NONBLOCK : 0));
        if (fd < 0) throw PosixException.FromLastError("eventfd");
        _fd = new FileDescriptorHandle(fd);
    }

    public int Number => _fd.Number;

    /// <summary>Adds <paramref name="value"/> to the counter, waking a reader.</summary>
    public void Signal(ulong value = 1)
    {
        if (Libc.Write(_fd.Number, &value, sizeof(ulong)) != sizeof(ulong))
            throw PosixException.FromLastError("write", "eventfd");
    }

    /// <summary>Reads and clears the counter; 0 when it was already 0 (non-blocking).</summary>
    public ulong Drain()
    {
        ulong value;
        if (Libc.Read(_fd.Number, &value, sizeof(ulong)) == sizeof(ulong)) return value;
        int errno = Marshal.GetLastPInvokeError();
        if (errno == Libc.EAGAIN) return 0;
        throw new PosixException("read", errno, "eventfd");
    }

    public void Dispose() => _fd.Dispose();
}
