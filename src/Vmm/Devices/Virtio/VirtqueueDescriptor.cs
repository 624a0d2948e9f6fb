using System.Runtime.InteropServices;

namespace Vmm.Devices.Virtio;

/// <summary>struct virtq_desc (virtio 1.2 §2.7.5), as read from guest RAM. It is read once into this
/// copy and every check runs on the copy, so a guest rewriting the table meanwhile cannot slip a value
/// past a check (no double fetch). Fields are little-endian like the host (x86_64).</summary>
[StructLayout(LayoutKind.Sequential)]
internal readonly struct VirtqueueDescriptor
{
    public const ushort FlagNext = 1;
    public const ushort FlagWrite = 2;
    public const ushort FlagIndirect = 4;

    public readonly ulong Address;
    public readonly uint Length;
    public readonly ushort Flags;
    public readonly ushort Next;

    public VirtqueueDescriptor(ulong address, uint length, ushort flags, ushort next)
    {
        Address = address;
        Length = length;
        Flags = flags;
        Next = next;
    }

    public bool HasNext => (Flags & FlagNext) != 0;

    public bool IsDeviceWritable => (Flags & FlagWrite) != 0;

    public bool IsIndirect => (Flags & FlagIndirect) != 0;
}
