namespace Vmm.Memory;

/// <summary>A guest physical address range that is not backed by guest RAM.</summary>
public sealed class GuestMemoryException(ulong address, ulong lengthBytes)
    : Exception($"guest physical range 0x{address:x}+0x{lengthBytes:x} is not inside guest RAM")
{
    public ulong Address { get; } = address;
    public ulong LengthBytes { get; } = lengthBytes;
}
