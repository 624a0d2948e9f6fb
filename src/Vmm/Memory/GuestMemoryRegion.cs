namespace Vmm.Memory;

/// <summary>One contiguous range of guest physical RAM and where it lives in this process.</summary>
public sealed record GuestMemoryRegion(uint Slot, ulong GuestAddress, ulong SizeBytes, nint HostAddress)
{
    public ulong EndAddress => GuestAddress + SizeBytes;

    public bool Contains(ulong address, ulong lengthBytes) =>
        address >= GuestAddress && lengthBytes <= SizeBytes && address - GuestAddress <= SizeBytes - lengthBytes;
}
