using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Vmm.Kvm.Interop;

namespace Vmm.Vm;

/// <summary>The file behind --serial-log, opened with O_APPEND and never truncated: a VM that moves between hosts (a
/// migration, a failover) or that a cluster manager starts again writes on where the console left off, as a log does,
/// and while a migration hands over, the source's last bytes and the target's first ones both land at the end (.NET's
/// FileMode.Append only seeks to the end once, so a second writer would overwrite them).</summary>
public static class SerialLogFile
{
    public static Stream Open(string path)
    {
        int fd = Libc.Open(path, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_APPEND | Libc.O_CLOEXEC, 0b110_100_100);
        if (fd < 0) throw new ConfigurationException($"--serial-log {path} cannot be written: {Libc.Describe(Marshal.GetLastPInvokeError())}");
        return new FileStream(new SafeFileHandle(fd, ownsHandle: true), FileAccess.Write, bufferSize: 0);
    }
}
