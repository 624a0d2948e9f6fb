using Vmm.Kvm.Interop;

namespace Vmm.Kvm;

/// <summary>A failed POSIX call (open, mmap, eventfd, ...), named with its errno.</summary>
public class PosixException(string call, int errno, string? detail = null)
    : VmmException($"{call} failed: {Libc.Describe(errno)} (errno {errno}){(detail is null ? "" : ": " + detail)}")
{
    public string Call { get; } = call;
    public int Errno { get; } = errno;

    public static PosixException FromLastError(string call, string? detail = null) =>
        new(call, System.Runtime.InteropServices.Marshal.GetLastPInvokeError(), detail);
}
