using System.Runtime.InteropServices;
using Vmm.Kvm.Interop;

namespace Vmm.Kvm;

/// <summary>The shapes every KVM ioctl wrapper shares: read a struct, write a struct, turn a failure into a
/// <see cref="KvmException"/> naming the ioctl and errno.</summary>
internal static unsafe class KvmIoctl
{
    public static T Get<T>(FileDescriptorHandle fd, string name, nuint request) where T : unmanaged
    {
        T value;
        Check(name, Libc.Ioctl(fd.Number, request, &value));
        return value;
    }

    public static void Set<T>(FileDescriptorHandle fd, string name, nuint request, in T value) where T : unmanaged
    {
        fixed (T* p = &value) Check(name, Libc.Ioctl(fd.Number, request, p));
    }

    public static void Check(string name, int result)
    {
        if (result < 0) throw new KvmException(name, Marshal.GetLastPInvokeError());
    }
}
