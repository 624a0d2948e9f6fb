using System.Runtime.InteropServices;

namespace Vmm.Kvm;

/// <summary>A KVM ioctl that failed: carries the ioctl's name and errno so a report says exactly what broke.</summary>
public sealed class KvmException(string ioctl, int errno)
    : PosixException(ioctl, errno)
{
    public string Ioctl => Call;

    public static KvmException FromLastError(string ioctl) => new(ioctl, Marshal.GetLastPInvokeError());
}
