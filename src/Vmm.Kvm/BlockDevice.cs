using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Vmm.Kvm.Interop;

namespace Vmm.Kvm;

/// <summary>What sets a host block device (a loop device, an LVM volume, a DRBD device) apart from an image file
/// for a disk: its size is not its inode's (fstat says 0 bytes), it is the device's own.</summary>
public static unsafe class BlockDevice
{
    // _IOR(0x12, 114, size_t)
    private const nuint BlkGetSize64 = 0x80081272;
    // _IO(0x12, 119)
    private const nuint BlkDiscard = 0x1277;
    private const int ENOTTY = 25;

    /// <summary>The size of the block device open as <paramref name="file"/>, or null when it is not a block device.</summary>
    public static long? SizeBytes(SafeFileHandle file)
    {
        ulong bytes;
        if (Libc.Ioctl((int)file.DangerousGetHandle(), BlkGetSize64, &bytes) == 0) return (long)bytes;
        int errno = Marshal.GetLastPInvokeError();
        // Anything else has no such ioctl: file systems answer ENOTTY, a few EINVAL.
        if (errno is ENOTTY or Libc.EINVAL) return null;
        throw new PosixException("ioctl BLKGETSIZE64", errno);
    }

    /// <summary>Tells the device the range is unused (BLKDISCARD): a thin LVM volume or an SSD frees it, DRBD passes it to
    /// its peer. Advice: what the range reads afterwards is the device's business. False when the device takes no discards.</summary>
    public static bool Discard(SafeFileHandle device, long offset, long length)
    {
        ulong* range = stackalloc ulong[2];
        range[0] = (ulong)offset;
        range[1] = (ulong)length;
        return Libc.Ioctl((int)device.DangerousGetHandle(), BlkDiscard, range) == 0;
    }
}
