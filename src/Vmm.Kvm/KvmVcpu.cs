using System.Runtime.InteropServices;
using Vmm.Kvm.Interop;
using static Vmm.Kvm.KvmIoctl;

namespace Vmm.Kvm;

/// <summary>A vCPU file descriptor and its kvm_run page: typed wrappers over the vCPU ioctls.</summary>
public sealed unsafe class KvmVcpu : IDisposable
{
    private readonly FileDescriptorHandle _fd;

    internal KvmVcpu(int index, FileDescriptorHandle fd, KvmRunPage runPage)
    {
        Index = index;
        _fd = fd;
        RunPage = runPage;
    }

    public int Index { get; }

    /// <summary>Maps this vCPU's dirty ring; the VM must have KVM_CAP_DIRTY_LOG_RING enabled with this size.</summary>
    public KvmDirtyRing MapDirtyRing(int sizeBytes) => KvmDirtyRing.Map(_fd, sizeBytes);
    public KvmRunPage RunPage { get; }

    /// <summary>KVM_RUN. Returns false when the call was interrupted by a signal (EINTR) or must be
    /// retried (EAGAIN: an AP still waiting for its startup IPI); true when <see cref="RunPage"/> holds an exit.</summary>
    public bool Run()
    {
        if (Libc.Ioctl(_fd.Number, KvmIoctls.Run, (nuint)0) == 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno is Libc.EINTR or Libc.EAGAIN) return false;
        throw new KvmException("KVM_RUN", errno);
    }

    public KvmRegs GetRegs() => Get<KvmRegs>(_fd, "KVM_GET_REGS", KvmIoctls.GetRegs);
    public void SetRegs(in KvmRegs regs) => Set(_fd, "KVM_SET_REGS", KvmIoctls.SetRegs, regs);
    public KvmSregs GetSregs() => Get<KvmSregs>(_fd, "KVM_GET_SREGS", KvmIoctls.GetSregs);
    public void SetSregs(in KvmSregs sregs) => Set(_fd, "KVM_SET_SREGS", KvmIoctls.SetSregs, sregs);
    public KvmFpu GetFpu() => Get<KvmFpu>(_fd, "KVM_GET_FPU", KvmIoctls.GetFpu);
    public void SetFpu(in KvmFpu fpu) => Set(_fd, "KVM_SET_FPU", KvmIoctls.SetFpu, fpu);
    public KvmLapicState GetLapic() => Get<KvmLapicState>(_fd, "KVM_GET_LAPIC", KvmIoctls.GetLapic);
    public void SetLapic(in KvmLapicState lapic) => Set(_fd, "KVM_SET_LAPIC", KvmIoctls.SetLapic, lapic);
    public KvmVcpuEvents GetVcpuEvents() => Get<KvmVcpuEvents>(_fd, "KVM_GET_VCPU_EVENTS", KvmIoctls.GetVcpuEvents);
    public void SetVcpuEvents(in KvmVcpuEvents events) => Set(_fd, "KVM_SET_VCPU_EVENTS", KvmIoctls.SetVcpuEvents, events);

    public KvmMpState GetMpState() => Get<KvmMpState>(_fd, "KVM_GET_MP_STATE", KvmIoctls.GetMpState);
    public void SetMpState(in KvmMpState state) => Set(_fd, "KVM_SET_MP_STATE", KvmIoctls.SetMpState, state);
    public KvmDebugRegs GetDebugRegs() => Get<KvmDebugRegs>(_fd, "KVM_GET_DEBUGREGS", KvmIoctls.GetDebugRegs);
    public void SetDebugRegs(in KvmDebugRegs regs) => Set(_fd, "KVM_SET_DEBUGREGS", KvmIoctls.SetDebugRegs, regs);
    public KvmXcrs GetXcrs() => Get<KvmXcrs>(_fd, "KVM_GET_XCRS", KvmIoctls.GetXcrs);
    public void SetXcrs(in KvmXcrs xcrs) => Set(_fd, "KVM_SET_XCRS", KvmIoctls.SetXcrs, xcrs);

    /// <summary>The XSAVE area. <paramref name="sizeBytes"/> is what KVM_CAP_XSAVE2 reports (0 or at most
    /// 4096 on hosts without extended state such as AMX, then the legacy KVM_GET_XSAVE is used).</summary>
    public byte[] GetXsave(int sizeBytes)
    {
        bool extended = sizeBytes > sizeof(KvmXsave);
        byte[] area = new byte[extended ? sizeBytes : sizeof(KvmXsave)];
        fixed (byte* p = area)
            Check(extended ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE", Libc.Ioctl(_fd.Number, extended ? KvmIoctls.GetXsave2 : KvmIoctls.GetXsave, p));
        return area;
    }

    /// <summary>KVM_SET_XSAVE; KVM reads as many bytes as this vCPU's XSAVE area has, so a shorter area is refused here.</summary>
    public void SetXsave(ReadOnlySpan<byte> area)
    {
        if (area.Length < sizeof(KvmXsave)) throw new ArgumentException($"an XSAVE area is at least {sizeof(KvmXsave)} bytes", nameof(area));
        fixed (byte* p = area) Check("KVM_SET_XSAVE", Libc.Ioctl(_fd.Number, KvmIoctls.SetXsave, p));
    }

    /// <summary>KVM_SET_TSC_KHZ: runs the guest's TSC at this frequency (KVM_CAP_TSC_CONTROL), so a guest
    /// moved to a host with another TSC frequency keeps its notion of time.</summary>
    public void SetTscKhz(uint khz) => Check("KVM_SET_TSC_KHZ", Libc.Ioctl(_fd.Number, KvmIoctls.SetTscKhz, (nuint)khz));

    /// <summary>KVM_KVMCLOCK_CTRL: tells a guest that uses kvmclock that the host stopped it (a pause, a
    /// migration), so its soft-lockup watchdog does not blame itself. False where the guest has no kvmclock.</summary>
    public bool NotifyGuestStopped() => Libc.Ioctl(_fd.Number, KvmIoctls.KvmclockCtrl, (nuint)0) == 0;

    /// <summary>KVM_GET_TSC_KHZ: the frequency of the guest's time-stamp counter.</summary>
    public uint GetTscKhz()
    {
        int khz = Libc.Ioctl(_fd.Number, KvmIoctls.GetTscKhz, (nuint)0);
        if (khz < 0) throw KvmException.FromLastError("KVM_GET_TSC_KHZ");
        return (uint)khz;
    }

    /// <summary>KVM_TRANSLATE: the guest physical address behind a linear address in the vCPU's current
    /// paging mode, or null when it is not mapped.</summary>
    public ulong? Translate(ulong linearAddress)
    {
        var translation = new KvmTranslation { LinearAddress = linearAddress };
        Check("KVM_TRANSLATE", Libc.Ioctl(_fd.Number, KvmIoctls.Translate, &translation));
        return translation.Valid != 0 ? translation.PhysicalAddress : null;
    }

    /// <summary>KVM_MAX_CPUID_ENTRIES: the most entries KVM_SET_CPUID2 takes.</summary>
    public const int MaxCpuidEntries = 256;

    public void SetCpuid(ReadOnlySpan<KvmCpuidEntry2> entries)
    {
        byte[] buffer = new byte[sizeof(KvmCpuid2Header) + entries.Length * sizeof(KvmCpuidEntry2)];
        fixed (byte* p = buffer)
        {
            ((KvmCpuid2Header*)p)->Count = (uint)entries.Length;
            entries.CopyTo(new Span<KvmCpuidEntry2>(p + sizeof(KvmCpuid2Header), entries.Length));
            Check("KVM_SET_CPUID2", Libc.Ioctl(_fd.Number, KvmIoctls.SetCpuid2, p));
        }
    }

    /// <summary>KVM_GET_CPUID2: the CPUID the vCPU shows its guest, including the bits KVM keeps in step with
    /// the guest's own settings (OSXSAVE follows CR4, APIC the APIC base MSR). KVM answers E2BIG without the
    /// count when the buffer is too small, so it is retried larger. Not while the vCPU is in KVM_RUN: the
    /// ioctl waits for the vCPU's lock, which a halted guest never gives up.</summary>
    public KvmCpuidEntry2[] GetCpuid()
    {
        for (int capacity = 64; ; capacity *= 2)
        {
            byte[] buffer = new byte[sizeof(KvmCpuid2Header) + capacity * sizeof(KvmCpuidEntry2)];
            fixed (byte* p = buffer)
            {
                ((KvmCpuid2Header*)p)->Count = (uint)capacity;
                if (Libc.Ioctl(_fd.Number, KvmIoctls.GetCpuid2, p) < 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == 7 /* E2BIG */ && capacity < 4 * MaxCpuidEntries) continue;
                    throw new KvmException("KVM_GET_CPUID2", errno);
                }
                int count = (int)Math.Min(((KvmCpuid2Header*)p)->Count, (uint)capacity);
                return new ReadOnlySpan<KvmCpuidEntry2>(p + sizeof(KvmCpuid2Header), count).ToArray();
            }
        }
    }

    /// <summary>KVM_SET_MSRS; KVM stops at the first MSR it refuses, so a short count is an error naming it.</summary>
    public void SetMsrs(ReadOnlySpan<KvmMsrEntry> entries)
    {
        int written = TransferMsrs("KVM_SET_MSRS", KvmIoctls.SetMsrs, entries, null);
        if (written != entries.Length)
            throw new KvmException($"KVM_SET_MSRS (MSR 0x{entries[written].Index:x} refused)", 22 /* EINVAL */);
    }

    /// <summary>KVM_GET_MSRS for the given indexes; returns how many were read (KVM stops at the first it cannot read).</summary>
    public int GetMsrs(Span<KvmMsrEntry> entries) => TransferMsrs("KVM_GET_MSRS", KvmIoctls.GetMsrs, entries, entries);

    private int TransferMsrs(string name, nuint request, ReadOnlySpan<KvmMsrEntry> input, Span<KvmMsrEntry> output)
    {
        byte[] buffer = new byte[sizeof(KvmMsrsHeader) + input.Length * sizeof(KvmMsrEntry)];
        fixed (byte* p = buffer)
        {
            ((KvmMsrsHeader*)p)->Count = (uint)input.Length;
            var entries = new Span<KvmMsrEntry>(p + sizeof(KvmMsrsHeader), input.Length);
            input.CopyTo(entries);
            int result = Libc.Ioctl(_fd.Number, request, p);
            if (result < 0) throw KvmException.FromLastError(name);
            if (!output.IsEmpty) entries[..result].CopyTo(output);
            return result;
        }
    }

    public void Dispose()
    {
        RunPage.Dispose();
        _fd.Dispose();
    }
}
