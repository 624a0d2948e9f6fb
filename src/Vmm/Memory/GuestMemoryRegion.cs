namespace Vmm.Memory;

/// <summary>One contiguous range of guest physical RAM and where it lives in this process.</summary>
public sealed record GuestMemoryRegion(uint Slot, ulong GuestAddress, ulong SizeBytes, nint HostAddress)
{
    public const int PageSize = 4096;

    /// <summary>Pages of this region written by the VMM's devices (one bit per page): KVM's dirty log only
    /// sees writes by vCPUs, so live migration merges this in or it would miss DMA-style writes.</summary>
    internal ulong[] DeviceDirtyBitmap { get; } = new ulong[(SizeBytes / PageSize + 63) / 64];

    public ulong EndAddress => GuestAddress + SizeBytes;

    public bool Contains(ulong address, ulong lengthBytes) =>
        address >= GuestAddress && lengthBytes <= SizeBytes && address - GuestAddress <= SizeBytes - lengthBytes;
}
