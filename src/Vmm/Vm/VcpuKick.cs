using System.Runtime.InteropServices;
using Vmm.Kvm.Interop;

namespace Vmm.Vm;

/// <summary>Gets a vCPU thread out of KVM_RUN: a signal makes the ioctl return EINTR. The signal needs a
/// handler (ignored or default-action signals do not interrupt it), so vmm registers one that does nothing.</summary>
internal static class VcpuKick
{
    private const int SigUsr1 = 10;
    private static PosixSignalRegistration? _registration;
    private static readonly object Lock = new();

    public static void EnsureHandlerInstalled()
    {
        lock (Lock)
            _registration ??= PosixSignalRegistration.Create((PosixSignal)SigUsr1, context => context.Cancel = true);
    }

    public static void Signal(nuint thread)
    {
        if (thread != 0) Libc.PthreadKill(thread, SigUsr1);
    }
}
