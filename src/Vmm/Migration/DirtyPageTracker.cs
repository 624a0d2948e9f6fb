using Vmm.Kvm;
using Vmm.Memory;

namespace Vmm.Migration;

/// <summary>Which guest pages changed since the last look: KVM's dirty log (writes by vCPUs) merged with
/// vmm's own bitmap of pages devices wrote (virtqueue rings, block reads, received frames), which KVM
/// never sees. With KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 the log is read and the pages re-protected in two
/// steps (KVM_GET_DIRTY_LOG, then KVM_CLEAR_DIRTY_LOG), and logging starts with every page marked
/// instead of write-protecting all of RAM at once.</summary>
internal sealed class DirtyPageTracker : IDisposable
{
    private const ulong ManualProtectEnable = 1, ManualProtectInitiallySet = 2;

    private readonly KvmVm _vm;
    private readonly GuestMemory _memory;
    private bool _tracking;

    public DirtyPageTracker(KvmVm vm, GuestMemory memory)
    {
        _vm = vm;
        _memory = memory;
        int manual = vm.CheckExtension(KvmCapability.ManualDirtyLogProtect2);
        if ((manual & (int)(ManualProtectEnable | ManualProtectInitiallySet)) == (int)(ManualProtectEnable | ManualProtectInitiallySet))
        {
            vm.EnableCap(KvmCapability.ManualDirtyLogProtect2, ManualProtectEnable | ManualProtectInitiallySet);
            ManualProtect = true;
        }
    }

    public bool ManualProtect { get; }

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
        var bitmaps = new ulong[_memory.Regions.Count][];
        for (int i = 0; i < bitmaps.Length; i++)
        {
            var region = _memory.Regions[i];
            ulong pages = region.SizeBytes / GuestMemoryRegion.PageSize;
            var bitmap = new ulong[(pages + 63) / 64];
            _vm.GetDirtyLog(region.Slot, bitmap);
            if (ManualProtect && bitmap.AsSpan().ContainsAnyExcept(0UL))
                _vm.ClearDirtyLog(region.Slot, 0, (uint)pages, bitmap);
            ulong[] byDevices = _memory.TakeDeviceDirtyBitmap(region);
            for (int w = 0; w < bitmap.Length; w++) bitmap[w] |= byDevices[w];
            bitmaps[i] = bitmap;
        }
        return new DirtyPages(_memory, bitmaps);
    }

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
