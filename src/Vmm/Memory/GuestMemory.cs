using System.Runtime.InteropServices;
using Vmm.Kvm;
using Vmm.Kvm.Interop;

namespace Vmm.Memory;

/// <summary>Guest RAM: anonymous mappings, one per region, and the only code that turns a guest
/// physical address into a host pointer. Every access is bounds-checked; an address outside RAM is a
/// <see cref="GuestMemoryException"/>, never a wild read or write.
/// <para>RAM is unmapped when its owner disposes it and every <see cref="Lease"/> taken on it is released:
/// a thread that reads RAM while the VM may end (a migration, a snapshot) holds a lease, so RAM never
/// disappears under it. Access after the unmapping is a <see cref="GuestMemoryException"/>.</para></summary>
public sealed unsafe class GuestMemory : IDisposable
{
    private readonly GuestMemoryRegion[] _regions;
    private readonly bool _imageBacked;
    // The owner's reference plus one per lease; RAM is unmapped when it drops to zero.
    private int _references = 1;
    private int _ownerReleased;
    private volatile bool _unmapped;

    private GuestMemory(GuestMemoryRegion[] regions, bool imageBacked)
    {
        _regions = regions;
        _imageBacked = imageBacked;
    }

    public IReadOnlyList<GuestMemoryRegion> Regions => _regions;

    public ulong TotalBytes => _regions.Aggregate(0UL, (sum, r) => sum + r.SizeBytes);

    /// <summary>Maps anonymous memory for each (address, size) range, in order. With
    /// <paramref name="hugePages"/>, each range starts on a 2 MiB boundary and is advised for transparent huge
    /// pages: a first touch (a migration target filling RAM) takes one fault per 2 MiB instead of per 4 KiB, and
    /// KVM can map the guest with 2 MiB pages (fewer TLB misses in the guest on hardware KVM).</summary>
    public static GuestMemory Allocate(IReadOnlyList<(ulong GuestAddress, ulong SizeBytes)> ranges, bool hugePages = false) => Map(ranges, null, hugePages);

    /// <summary>Maps each range from <paramref name="imagePath"/>, where the ranges are stored one after the
    /// other (what a snapshot's memory image holds). The mapping is private and lazy: a page is read
    /// from the file when the guest first touches it, and the guest's writes never reach the file.</summary>
    public static GuestMemory MapImage(IReadOnlyList<(ulong GuestAddress, ulong SizeBytes)> ranges, string imagePath)
    {
        Microsoft.Win32.SafeHandles.SafeFileHandle image;
        try
        {
            image = File.OpenHandle(imagePath, FileMode.Open, FileAccess.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new GuestMemoryException($"cannot map guest RAM from {imagePath}: {e.Message}");
        }
        using var _ = image;
        ulong expected = ranges.Aggregate(0UL, (sum, r) => sum + r.SizeBytes);
        long actual = RandomAccess.GetLength(image);
        if ((ulong)actual != expected)
            throw new Serialization.StateFormatException($"{imagePath} holds {actual} bytes, the VM's RAM is {expected}");
        return Map(ranges, image, hugePages: false);
    }

    private const ulong HugePageBytes = 2UL << 20;

    private static GuestMemory Map(IReadOnlyList<(ulong GuestAddress, ulong SizeBytes)> ranges, Microsoft.Win32.SafeHandles.SafeFileHandle? image, bool hugePages)
    {
        var regions = new List<GuestMemoryRegion>();
        ulong fileOffset = 0;
        try
        {
            foreach (var (guestAddress, sizeBytes) in ranges)
            {
                // MAP_NORESERVE: guest RAM is touched lazily; a 2 GiB guest that uses 100 MiB costs 100 MiB.
                nint host = image is not null
                    ? Libc.Mmap(0, (nuint)sizeBytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_NORESERVE, (int)image.DangerousGetHandle(), (long)fileOffset)
                    : hugePages ? MapAnonymousAligned(sizeBytes)
                    : Libc.Mmap(0, (nuint)sizeBytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
                if (host == Libc.MapFailed)
                    throw PosixException.FromLastError("mmap", $"cannot map {sizeBytes >> 20} MiB of guest RAM");
                // Advice only: a kernel without THP (or with it off) maps 4 KiB pages as before.
                if (hugePages && image is null) Libc.Madvise(host, (nuint)sizeBytes, Libc.MADV_HUGEPAGE);
                fileOffset += sizeBytes;
                // The guest's memory never belongs in a forked child (e.g. a helper process the VMM starts).
                Libc.Madvise(host, (nuint)sizeBytes, Libc.MADV_DONTFORK);
                regions.Add(new GuestMemoryRegion((uint)regions.Count, guestAddress, sizeBytes, host));
            }
        }
        catch
        {
            foreach (var region in regions) Libc.Munmap(region.HostAddress, (nuint)region.SizeBytes);
            throw;
        }
        return new GuestMemory(regions.ToArray(), image is not null);
    }

    /// <summary>An anonymous mapping that starts on a 2 MiB boundary (huge pages need it, and KVM maps a guest
    /// range with them only where host and guest addresses agree modulo 2 MiB): map 2 MiB more, trim the ends.</summary>
    private static nint MapAnonymousAligned(ulong sizeBytes)
    {
        nint raw = Libc.Mmap(0, (nuint)(sizeBytes + HugePageBytes), Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        if (raw == Libc.MapFailed) return raw;
        ulong start = ((ulong)raw + HugePageBytes - 1) & ~(HugePageBytes - 1);
        ulong head = start - (ulong)raw, tail = HugePageBytes - head;
        if (head > 0) Libc.Munmap(raw, (nuint)head);
        if (tail > 0) Libc.Munmap((nint)(start + sizeBytes), (nuint)tail);
        return (nint)start;
    }

    public bool IsRam(ulong address, ulong lengthBytes) => FindRegion(address, lengthBytes) is not null;

    /// <summary>Keeps RAM mapped until the returned lease is disposed, even if the owner disposes it first.
    /// Refused once the owner has disposed it (the VM has ended).</summary>
    public IDisposable Lease()
    {
        while (true)
        {
            int references = Volatile.Read(ref _references);
            if (references == 0 || Volatile.Read(ref _ownerReleased) != 0)
                throw new GuestMemoryException("guest RAM is gone: the VM has ended");
            if (Interlocked.CompareExchange(ref _references, references + 1, references) == references)
                return new MemoryLease(this);
        }
    }

    private sealed class MemoryLease(GuestMemory memory) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) memory.Release();
        }
    }

    private void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0) return;
        _unmapped = true;
        foreach (var region in _regions) Libc.Munmap(region.HostAddress, (nuint)region.SizeBytes);
    }

    private void ThrowIfUnmapped()
    {
        if (_unmapped) throw new GuestMemoryException("guest RAM is gone: the VM has ended");
    }

    /// <summary>A view of guest RAM; the range must lie within one region.</summary>
    public Span<byte> GetSpan(ulong address, int lengthBytes)
    {
        ThrowIfUnmapped();
        if (lengthBytes < 0) throw new GuestMemoryException(address, (ulong)(long)lengthBytes);
        var region = FindRegion(address, (ulong)lengthBytes) ?? throw new GuestMemoryException(address, (ulong)lengthBytes);
        return new Span<byte>((byte*)region.HostAddress + (address - region.GuestAddress), lengthBytes);
    }

    public void Read(ulong address, Span<byte> destination) => GetSpan(address, destination.Length).CopyTo(destination);

    public void Write(ulong address, ReadOnlySpan<byte> source) => source.CopyTo(GetSpan(address, source.Length));

    public T Read<T>(ulong address) where T : unmanaged =>
        MemoryMarshal.Read<T>(GetSpan(address, sizeof(T)));

    public void Write<T>(ulong address, T value) where T : unmanaged =>
        MemoryMarshal.Write(GetSpan(address, sizeof(T)), in value);

    /// <summary>Reads a 16-bit value with acquire semantics: no later read can be satisfied before it. A
    /// device reads a ring index this way so it sees the ring entries the guest wrote before publishing it.</summary>
    public ushort ReadUInt16Acquire(ulong address) =>
        Volatile.Read(ref MemoryMarshal.AsRef<ushort>(GetSpan(address, sizeof(ushort))));

    /// <summary>Writes a 16-bit value on behalf of a device with release semantics (no earlier write can
    /// become visible after it), and records the page as dirty: how a device publishes a ring index.</summary>
    public void WriteUInt16ReleaseFromDevice(ulong address, ushort value)
    {
        Volatile.Write(ref MemoryMarshal.AsRef<ushort>(GetSpan(address, sizeof(ushort))), value);
        MarkDirty(address, sizeof(ushort));
    }

    /// <summary>A write on behalf of a device (a virtqueue's used ring, a block read landing in a buffer):
    /// like <see cref="Write"/>, and the pages are recorded in the device dirty bitmap.</summary>
    public void WriteFromDevice(ulong address, ReadOnlySpan<byte> source)
    {
        Write(address, source);
        MarkDirty(address, (ulong)source.Length);
    }

    public void WriteFromDevice<T>(ulong address, T value) where T : unmanaged
    {
        Write(address, value);
        MarkDirty(address, (ulong)sizeof(T));
    }

    /// <summary>The host location of guest RAM [address, address + length) as an iovec, for readv/writev
    /// straight between a file descriptor and guest buffers. The range must be RAM, within one region.</summary>
    public IoVec ToIoVec(ulong address, ulong lengthBytes)
    {
        ThrowIfUnmapped();
        var region = FindRegion(address, lengthBytes) ?? throw new GuestMemoryException(address, lengthBytes);
        return new IoVec { Base = region.HostAddress + (nint)(address - region.GuestAddress), Length = (nuint)lengthBytes };
    }

    /// <summary>Records that a device wrote [address, address + length). The range must be RAM.</summary>
    public void MarkDirty(ulong address, ulong lengthBytes)
    {
        if (lengthBytes == 0) return;
        var region = FindRegion(address, lengthBytes) ?? throw new GuestMemoryException(address, lengthBytes);
        ulong first = (address - region.GuestAddress) / GuestMemoryRegion.PageSize;
        ulong last = (address - region.GuestAddress + lengthBytes - 1) / GuestMemoryRegion.PageSize;
        ulong[] bitmap = region.DeviceDirtyBitmap;
        for (ulong page = first; page <= last; page++)
            Interlocked.Or(ref bitmap[page / 64], 1UL << (int)(page % 64));
    }

    /// <summary>Returns the pages devices wrote in <paramref name="region"/> since the last call, and clears them.</summary>
    public ulong[] TakeDeviceDirtyBitmap(GuestMemoryRegion region)
    {
        ulong[] bitmap = region.DeviceDirtyBitmap;
        var taken = new ulong[bitmap.Length];
        for (int i = 0; i < bitmap.Length; i++) taken[i] = Interlocked.Exchange(ref bitmap[i], 0);
        return taken;
    }

    /// <summary>The pages of <paramref name="region"/> that may hold something other than zeros, one bit per
    /// page; a migration's first pass sends only these, since the target's RAM starts zeroed. For anonymous
    /// RAM, /proc/self/pagemap tells: a page that is neither mapped nor swapped was never written, and one
    /// mapped but not exclusively is the shared zero page that a read maps (guest RAM is never shared:
    /// MAP_PRIVATE, MADV_DONTFORK, no KSM), so both read as zeros and neither needs reading. RAM mapped from
    /// a snapshot image, or where pagemap cannot be read, gets every page.</summary>
    public ulong[] PagesThatMayHoldData(GuestMemoryRegion region)
    {
        const ulong Present = 1UL << 63, Swapped = 1UL << 62, ExclusivelyMapped = 1UL << 56;
        ulong pages = region.SizeBytes / GuestMemoryRegion.PageSize;
        var bitmap = new ulong[(pages + 63) / 64];
        try
        {
            if (_imageBacked) throw new IOException("RAM mapped from an image holds the image's data where it is not mapped");
            using var pagemap = File.OpenHandle("/proc/self/pagemap", FileMode.Open, FileAccess.Read);
            var entries = new ulong[64 * 1024];
            for (ulong first = 0; first < pages; first += (ulong)entries.Length)
            {
                int count = (int)Math.Min((ulong)entries.Length, pages - first);
                long offset = (long)(((ulong)region.HostAddress / GuestMemoryRegion.PageSize + first) * sizeof(ulong));
                var bytes = MemoryMarshal.AsBytes(entries.AsSpan(0, count));
                if (RandomAccess.Read(pagemap, bytes, offset) != bytes.Length) throw new IOException("short read of /proc/self/pagemap");
                for (int i = 0; i < count; i++)
                {
                    ulong entry = entries[i];
                    if ((entry & Swapped) != 0 || (entry & (Present | ExclusivelyMapped)) == (Present | ExclusivelyMapped))
                        bitmap[(first + (ulong)i) / 64] |= 1UL << (int)((first + (ulong)i) % 64);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Array.Fill(bitmap, ulong.MaxValue);
            if (pages % 64 != 0) bitmap[^1] = (1UL << (int)(pages % 64)) - 1;
        }
        return bitmap;
    }

    public void Fill(ulong address, ulong lengthBytes, byte value)
    {
        // Checked whole first, so a fill that runs past RAM writes nothing rather than part of it.
        if (lengthBytes == 0) return;
        if (!IsRam(address, lengthBytes)) throw new GuestMemoryException(address, lengthBytes);
        while (lengthBytes > 0)
        {
            int chunk = (int)Math.Min(lengthBytes, 1UL << 30);
            GetSpan(address, chunk).Fill(value);
            address += (ulong)chunk;
            lengthBytes -= (ulong)chunk;
        }
    }

    private GuestMemoryRegion? FindRegion(ulong address, ulong lengthBytes)
    {
        foreach (var region in _regions)
            if (region.Contains(address, lengthBytes)) return region;
        return null;
    }

    /// <summary>The owner is done with RAM; it is unmapped now, or when the last lease is released.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _ownerReleased, 1) == 0) Release();
    }
}
