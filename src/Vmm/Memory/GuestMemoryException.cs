namespace Vmm.Memory;

/// <summary>A guest physical address range that is not backed by guest RAM, or guest RAM that is no longer
/// there because its VM ended.</summary>
public sealed class GuestMemoryException : VmmException
{
    public GuestMemoryException(ulong address, ulong lengthBytes)
        : base($"guest physical range 0x{address:x}+0x{lengthBytes:x} is not inside guest RAM")
    {
        Address = address;
        LengthBytes = lengthBytes;
    }

    public GuestMemoryException(string message) : base(message) { }

    public ulong Address { get; }
    public ulong LengthBytes { get; }
}
