using System.Runtime.CompilerServices;
using Vmm.Kvm.Interop;

namespace Vmm.Kvm;

/// <summary>One vCPU's dirty ring (KVM_CAP_DIRTY_LOG_RING), mapped at KVM_DIRTY_LOG_PAGE_OFFSET of the vCPU
/// fd: KVM appends a <c>struct kvm_dirty_gfn</c> (flags, slot, page offset) for each page the vCPU dirties;
/// the VMM collects entries by flipping their flags from DIRTY to RESET, then KVM_RESET_DIRTY_RINGS
/// re-protects those pages. The only raw pointer to the ring is here.</summary>
public sealed unsafe class KvmDirtyRing : IDisposable
{
    private const long DirtyLogPageOffset = 64; // KVM_DIRTY_LOG_PAGE_OFFSET, in pages
    private const uint FlagDirty = 1, FlagReset = 2;
    public const int EntryBytes = 16;

    private byte* _ring;
    private readonly int _sizeBytes;
    private readonly uint _entryCount;
    private uint _fetchIndex;

    private KvmDirtyRing(byte* ring, int sizeBytes)
    {
        _ring = ring;
        _sizeBytes = sizeBytes;
        _entryCount = (uint)(sizeBytes / EntryBytes);
    }

    internal static KvmDirtyRing Map(FileDescriptorHandle vcpuFd, int sizeBytes)
    {
        nint address = Libc.Mmap(0, (nuint)sizeBytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, vcpuFd.Number, DirtyLogPageOffset * 4096);
        if (address == Libc.MapFailed) throw PosixException.FromLastError("mmap", "vCPU dirty ring");
        return new KvmDirtyRing((byte*)address, sizeBytes);
    }

    /// <summary>Hands every entry KVM published since the last call to <paramref name="onDirty"/> (slot, page
    /// offset in the slot) and marks it collected. Not thread-safe: one harvester at a time.</summary>
    public int Harvest(Action<uint, ulong> onDirty)
    {
        ObjectDisposedException.ThrowIf(_ring is null, this);
        int harvested = 0;
        while (true)
        {
            byte* entry = _ring + (_fetchIndex % _entryCount) * EntryBytes;
            // Acquire: the slot and offset KVM wrote before setting DIRTY are visible once DIRTY is.
            uint flags = Volatile.Read(ref Unsafe.AsRef<uint>(entry));
            if ((flags & FlagDirty) == 0) return harvested;
            onDirty(Unsafe.Read<uint>(entry + 4), Unsafe.Read<ulong>(entry + 8));
            Volatile.Write(ref Unsafe.AsRef<uint>(entry), FlagReset);
            _fetchIndex++;
            harvested++;
        }
    }

    public void Dispose()
    {
        if (_ring is null) return;
        Libc.Munmap((nint)_ring, (nuint)_sizeBytes);
        _ring = null;
    }
}
