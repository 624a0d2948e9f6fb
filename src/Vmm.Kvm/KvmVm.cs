using System.Runtime.InteropServices;
using Vmm.Kvm.Interop;
using static Vmm.Kvm.KvmIoctl;

namespace Vmm.Kvm;

/// <summary>A KVM virtual machine file descriptor: typed wrappers over the VM ioctls, no policy.</summary>
public sealed unsafe class KvmVm : IDisposable
{
    public const uint MemLogDirtyPages = 1;
    public const uint IoeventfdFlagDatamatch = 1 << 0;
    public const uint IoeventfdFlagPio = 1 << 1;

    private readonly FileDescriptorHandle _fd;

    internal KvmVm(KvmSystem system, FileDescriptorHandle fd)
    {
        System = system;
        _fd = fd;
    }

    public KvmSystem System { get; }

    public int CheckExtension(KvmCapability capability) =>
        Libc.Ioctl(_fd.Number, KvmIoctls.CheckExtension, (nuint)capability) is var r && r < 0 ? 0 : r;

    public void SetUserMemoryRegion(uint slot, ulong guestPhysAddr, ulong sizeBytes, nint hostAddress, uint flags = 0)
    {
        var region = new KvmUserspaceMemoryRegion
        {
            Slot = slot,
            Flags = flags,
            GuestPhysAddr = guestPhysAddr,
            MemorySize = sizeBytes,
            UserspaceAddr = (ulong)hostAddress,
        };
        Check("KVM_SET_USER_MEMORY_REGION", Libc.Ioctl(_fd.Number, KvmIoctls.SetUserMemoryRegion, &region));
    }

    public void SetTssAddress(uint address) =>
        Check("KVM_SET_TSS_ADDR", Libc.Ioctl(_fd.Number, KvmIoctls.SetTssAddr, (nuint)address));

    public void SetIdentityMapAddress(ulong address) =>
        Check("KVM_SET_IDENTITY_MAP_ADDR", Libc.Ioctl(_fd.Number, KvmIoctls.SetIdentityMapAddr, &address));

    public void CreateIrqchip() =>
        Check("KVM_CREATE_IRQCHIP", Libc.Ioctl(_fd.Number, KvmIoctls.CreateIrqchip, (nuint)0));

    public void CreatePit2()
    {
        // KVM_PIT_SPEAKER_DUMMY: KVM answers port 0x61 itself, which Linux reads while calibrating.
        var config = new KvmPitConfig { Flags = 1 };
        Check("KVM_CREATE_PIT2", Libc.Ioctl(_fd.Number, KvmIoctls.CreatePit2, &config));
    }

    public void SetIrqLine(uint irq, bool high)
    {
        var level = new KvmIrqLevel { Irq = irq, Level = high ? 1u : 0u };
        Check("KVM_IRQ_LINE", Libc.Ioctl(_fd.Number, KvmIoctls.IrqLine, &level));
    }

    public void RegisterIrqfd(int eventFd, uint gsi)
    {
        var irqfd = new KvmIrqfd { Fd = (uint)eventFd, Gsi = gsi };
        Check("KVM_IRQFD", Libc.Ioctl(_fd.Number, KvmIoctls.Irqfd, &irqfd));
    }

    /// <summary>Guest writes to the address (of that length, and with that value when <paramref name="datamatch"/>
    /// is given) signal the eventfd inside KVM, without an exit to the VMM.</summary>
    public void RegisterIoeventfd(int eventFd, ulong address, uint lengthBytes, bool portIo, ulong? datamatch = null)
    {
        var ioeventfd = new KvmIoeventfd
        {
            Addr = address,
            Len = lengthBytes,
            Fd = eventFd,
            Datamatch = datamatch ?? 0,
            Flags = (portIo ? IoeventfdFlagPio : 0) | (datamatch.HasValue ? IoeventfdFlagDatamatch : 0),
        };
        Check("KVM_IOEVENTFD", Libc.Ioctl(_fd.Number, KvmIoctls.Ioeventfd, &ioeventfd));
    }

    /// <summary>KVM_GET_DIRTY_LOG into <paramref name="bitmap"/> (one bit per page of the slot).</summary>
    public void GetDirtyLog(uint slot, Span<ulong> bitmap)
    {
        fixed (ulong* p = bitmap)
        {
            var log = new KvmDirtyLog { Slot = slot, DirtyBitmap = (ulong)p };
            Check("KVM_GET_DIRTY_LOG", Libc.Ioctl(_fd.Number, KvmIoctls.GetDirtyLog, &log));
        }
    }

    /// <summary>KVM_CLEAR_DIRTY_LOG (manual dirty-log protection): re-protects the pages set in
    /// <paramref name="bitmap"/>, which starts at <paramref name="firstPage"/> (a multiple of 64).</summary>
    public void ClearDirtyLog(uint slot, ulong firstPage, uint pageCount, ReadOnlySpan<ulong> bitmap)
    {
        fixed (ulong* p = bitmap)
        {
            var clear = new KvmClearDirtyLog { Slot = slot, FirstPage = firstPage, NumPages = pageCount, DirtyBitmap = (ulong)p };
            Check("KVM_CLEAR_DIRTY_LOG", Libc.Ioctl(_fd.Number, KvmIoctls.ClearDirtyLog, &clear));
        }
    }

    /// <summary>KVM_RESET_DIRTY_RINGS: re-protects the pages whose ring entries were collected.</summary>
    public void ResetDirtyRings()
    {
        if (Libc.Ioctl(_fd.Number, KvmIoctls.ResetDirtyRings, (nuint)0) < 0) throw KvmException.FromLastError("KVM_RESET_DIRTY_RINGS");
    }

    public void EnableCap(KvmCapability capability, ulong argument0)
    {
        var cap = new KvmEnableCap { Cap = (uint)capability };
        cap.Args[0] = argument0;
        Check("KVM_ENABLE_CAP", Libc.Ioctl(_fd.Number, KvmIoctls.EnableCap, &cap));
    }

    /// <summary>The in-kernel interrupt controller chips, by KVM's numbering.</summary>
    public const uint IrqchipPicMaster = 0, IrqchipPicSlave = 1, IrqchipIoapic = 2;

    public KvmIrqchip GetIrqchip(uint chipId)
    {
        var chip = new KvmIrqchip { ChipId = chipId };
        Check("KVM_GET_IRQCHIP", Libc.Ioctl(_fd.Number, KvmIoctls.GetIrqchip, &chip));
        return chip;
    }

    public void SetIrqchip(in KvmIrqchip chip) => Set(_fd, "KVM_SET_IRQCHIP", KvmIoctls.SetIrqchip, chip);
    public KvmPitState2 GetPit2() => Get<KvmPitState2>(_fd, "KVM_GET_PIT2", KvmIoctls.GetPit2);
    public void SetPit2(in KvmPitState2 state) => Set(_fd, "KVM_SET_PIT2", KvmIoctls.SetPit2, state);
    /// <summary>KVM_GET_CLOCK: kvmclock's current value in nanoseconds.</summary>
    public KvmClockData GetClock() => Get<KvmClockData>(_fd, "KVM_GET_CLOCK", KvmIoctls.GetClock);
    public void SetClock(in KvmClockData clock) => Set(_fd, "KVM_SET_CLOCK", KvmIoctls.SetClock, clock);

    public KvmVcpu CreateVcpu(int index)
    {
        int fd = Libc.Ioctl(_fd.Number, KvmIoctls.CreateVcpu, (nuint)index);
        if (fd < 0) throw KvmException.FromLastError("KVM_CREATE_VCPU");
        var handle = new FileDescriptorHandle(fd);
        try
        {
            return new KvmVcpu(index, handle, KvmRunPage.Map(handle, System.VcpuMmapSize));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public void Dispose() => _fd.Dispose();
}
