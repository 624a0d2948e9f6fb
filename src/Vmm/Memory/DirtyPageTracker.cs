using Vmm.Kvm;

namespace Vmm.Memory;

/// <summary>Which guest pages changed since the last look: what KVM saw vCPUs write, merged with vmm's own
/// bitmap of pages devices wrote (virtqueue rings, block reads, received frames), which KVM never sees.
/// KVM's side comes from one of two mechanisms:
/// <list type="bullet">
/// <item>the dirty log: KVM_GET_DIRTY_LOG per slot; with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 read and
/// re-protect are two steps (KVM_CLEAR_DIRTY_LOG), and logging starts with every page marked instead of
/// write-protecting all of RAM at once;</item>
/// <item>the dirty ring (when the machine was built with one): per-vCPU rings of written pages, harvested
/// here or, when a ring fills, by its vCPU (<see cref="HarvestRings"/>), then KVM_RESET_DIRTY_RINGS.</item>
/// </list></summary>
internal sealed class DirtyPageTracker : IDisposable
{
    private const ulong ManualProtectEnable = 1, ManualProtectInitiallySet = 2;

    private readonly KvmVm _vm;
    private readonly GuestMemory _memory;
    private readonly List<KvmDirtyRing>? _rings;
    private ulong[][] _harvested;
    private bool _tracking;

    /// <param name="rings">The vCPUs' dirty rings, or null to use the dirty log. The list is also the lock
    /// every harvester of these rings takes.</param>
    public DirtyPageTracker(KvmVm vm, GuestMemory memory, List<KvmDirtyRing>? rings)
    {
        _vm = vm;
        _memory = memory;
        _rings = rings;
        _harvested = EmptyBitmaps();
        if (rings is not null) return;
        int manual = vm.CheckExtension(KvmCapability.ManualDirtyLogProtect2);
        if ((manual & (int)(ManualProtectEnable | ManualProtectInitiallySet)) == (int)(ManualProtectEnable | ManualProtectInitiallySet))
        {
            vm.EnableCap(KvmCapability.ManualDirtyLogProtect2, ManualProtectEnable | ManualProtectInitiallySet);
            ManualProtect = true;
        }
    }

    public bool ManualProtect { get; }
    public bool UsesDirtyRing => _rings is not null;

    /// <summary>Turns on KVM_MEM_LOG_DIRTY_PAGES on every slot and forgets what was dirty before.</summary>
    public void Start()
    {
        foreach (var region in _memory.Regions)
            _vm.SetUserMemoryRegion(region.Slot, region.GuestAddress, region.SizeBytes, region.HostAddress, KvmVm.MemLogDirtyPages);
        _tracking = true;
        Collect();
    }

    /// <summary>The pages written since the previous call (or <see cref="Start"/>), one bitmap per region.</summary>
    public DirtyPages Collect()
    {
        ulong[][] bitmaps;
        if (_rings is not null)
        {
            lock (_rings)
            {
                HarvestRingsLocked();
                bitmaps = _harvested;
                _harvested = EmptyBitmaps();
            }
        }
        else
        {
            bitmaps = EmptyBitmaps();
            for (int i = 0; i < bitmaps.Length; i++)
            {
                var region = _memory.Regions[i];
                _vm.GetDirtyLog(region.Slot, bitmaps[i]);
                if (ManualProtect && bitmaps[i].AsSpan().ContainsAnyExcept(0UL))
                    _vm.ClearDirtyLog(region.Slot, 0, (uint)(region.SizeBytes / GuestMemoryRegion.PageSize), bitmaps[i]);
            }
        }
        for (int i = 0; i < bitmaps.Length; i++)
        {
            ulong[] byDevices = _memory.TakeDeviceDirtyBitmap(_memory.Regions[i]);
            for (int w = 0; w < bitmaps[i].Length; w++) bitmaps[i][w] |= byDevices[w];
        }
        return new DirtyPages(_memory, bitmaps);
    }

    /// <summary>Empties every vCPU's ring into this tracker: a vCPU calls it when its ring is full
    /// (KVM_EXIT_DIRTY_RING_FULL) and cannot go on until it is harvested and reset.</summary>
    public void HarvestRings()
    {
        if (_rings is null) return;
        lock (_rings) HarvestRingsLocked();
    }

    private void HarvestRingsLocked()
    {
        foreach (var ring in _rings!)
            ring.Harvest((slot, page) =>
            {
                // A slot or page that is not ours would be a KVM bug; it is ignored rather than trusted.
                if (slot >= _harvested.Length || page / 64 >= (ulong)_harvested[slot].Length) return;
                _harvested[slot][page / 64] |= 1UL << (int)(page % 64);
            });
        _vm.ResetDirtyRings();
    }

    private ulong[][] EmptyBitmaps() =>
        _memory.Regions.Select(r => new ulong[(r.SizeBytes / GuestMemoryRegion.PageSize + 63) / 64]).ToArray();

    /// <summary>Back to untracked slots (no write-protection faults for the guest).</summary>
    public void Stop()
    {
        if (!_tracking) return;
        _tracking = false;
        foreach (var region in _memory.Regions)
            _vm.SetUserMemoryRegion(region.Slot, region.GuestAddress, region.SizeBytes, region.HostAddress);
    }

    public void Dispose() => Stop();
}
