using System.Runtime.InteropServices;
using Vmm.Kvm.Interop;

namespace Vmm.Kvm;

/// <summary>An epoll instance: waits on many file descriptors at once; each carries a caller-chosen token.</summary>
public sealed unsafe class Epoll : IDisposable
{
    private readonly FileDescriptorHandle _fd;

    public Epoll()
    {
        int fd = Libc.EpollCreate1(Libc.EPOLL_CLOEXEC);
        if (fd < 0) throw PosixException.FromLastError("epoll_create1");
        _fd = new FileDescriptorHandle(fd);
    }

    public void Add(int fd, ulong token, uint events = Libc.EPOLLIN)
    {
        var ev = new EpollEvent { Events = events, Data = token };
        if (Libc.EpollCtl(_fd.Number, Libc.EPOLL_CTL_ADD, fd, &ev) < 0) throw PosixException.FromLastError("epoll_ctl", "add");
    }

    public void Remove(int fd)
    {
        if (Libc.EpollCtl(_fd.Number, Libc.EPOLL_CTL_DEL, fd, null) < 0) throw PosixException.FromLastError("epoll_ctl", "remove");
    }

    /// <summary>Waits for events; returns how many were stored in <paramref name="events"/> (0 on timeout or EINTR).</summary>
    public int Wait(Span<EpollEvent> events, int timeoutMs)
    {
        fixed (EpollEvent* p = events)
        {
            int count = Libc.EpollWait(_fd.Number, p, events.Length, timeoutMs);
            if (count >= 0) return count;
            int errno = Marshal.GetLastPInvokeError();
            if (errno == Libc.EINTR) return 0;
            throw new PosixException("epoll_wait", errno);
        }
    }

    public void Dispose() => _fd.Dispose();
}
