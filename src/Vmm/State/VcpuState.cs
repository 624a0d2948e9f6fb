using Vmm.Kvm;
using Vmm.Kvm.Interop;
using Vmm.Serialization;
using Vmm.Vm;

namespace Vmm.State;

/// <summary>Everything KVM holds for one vCPU: registers, special registers, FPU and XSAVE area, XCRs,
/// every MSR KVM lets userspace save, the local APIC, pending events, MP state and debug registers.</summary>
public sealed class VcpuState
{
    private const int MaxMsrs = 4096;
    private const int MaxXsaveBytes = 1 << 20;

    // KVM_VCPUEVENT_VALID_*: without these flags KVM_SET_VCPU_EVENTS ignores the pending NMI and SIPI vector.
    private const uint EventsValidNmiPending = 1, EventsValidSipiVector = 2;

    public required KvmRegs Regs { get; init; }
    public required KvmSregs Sregs { get; init; }
    public required KvmFpu Fpu { get; init; }
    /// <summary>Null where KVM has no XSAVE support (then <see cref="Fpu"/> carries the FPU/SSE state).</summary>
    public byte[]? Xsave { get; init; }
    public KvmXcrs? Xcrs { get; init; }
    public required KvmMsrEntry[] Msrs { get; init; }
    public required KvmLapicState Lapic { get; init; }
    public required KvmVcpuEvents Events { get; init; }
    public required KvmMpState MpState { get; init; }
    public KvmDebugRegs? DebugRegs { get; init; }
    public required uint TscKhz { get; init; }

    /// <summary>Reads the vCPU's state. The vCPU must not be in KVM_RUN, and must have completed any
    /// I/O exit with a KVM_RUN under immediate_exit (what a pause does), or a port read would be lost.</summary>
    public static VcpuState Capture(KvmVcpu vcpu, VcpuStateSupport support)
    {
        var events = vcpu.GetVcpuEvents();
        events.Flags |= EventsValidNmiPending | EventsValidSipiVector;
        return new VcpuState
        {
            Regs = vcpu.GetRegs(),
            Sregs = vcpu.GetSregs(),
            Fpu = vcpu.GetFpu(),
            Xsave = support.Xsave ? vcpu.GetXsave(support.XsaveBytes) : null,
            Xcrs = support.Xcrs ? vcpu.GetXcrs() : null,
            Msrs = support.ReadMsrs(vcpu),
            Lapic = vcpu.GetLapic(),
            Events = events,
            MpState = vcpu.GetMpState(),
            DebugRegs = support.DebugRegs ? vcpu.GetDebugRegs() : null,
            TscKhz = vcpu.GetTscKhz(),
        };
    }

    /// <summary>Loads the state into a vCPU created with the same CPUID. The order follows what KVM
    /// needs: MP state and registers first, the LAPIC before MSRs that depend on it (TSC deadline),
    /// pending events last so nothing set after them clears them.</summary>
    public void Restore(KvmVcpu vcpu, VcpuStateSupport support)
    {
        if (TscKhz != 0 && vcpu.GetTscKhz() != TscKhz && support.TscControl) vcpu.SetTscKhz(TscKhz);
        vcpu.SetMpState(MpState);
        vcpu.SetRegs(Regs);
        vcpu.SetSregs(Sregs);
        if (Xsave is not null && support.Xsave) vcpu.SetXsave(PadTo(Xsave, support.XsaveBytes));
        else vcpu.SetFpu(Fpu);
        if (Xcrs is { } xcrs && support.Xcrs) vcpu.SetXcrs(xcrs);
        if (DebugRegs is { } debug && support.DebugRegs) vcpu.SetDebugRegs(debug);
        vcpu.SetLapic(Lapic);
        vcpu.SetMsrs(Msrs);
        vcpu.SetVcpuEvents(Events);
    }

    // A source without extended XSAVE features sends 4 KiB; a target with them needs its full size.
    private static byte[] PadTo(byte[] area, int sizeBytes) =>
        area.Length >= sizeBytes ? area : [.. area, .. new byte[sizeBytes - area.Length]];

    public void Write(StateWriter w)
    {
        w.WriteStruct(Regs);
        w.WriteStruct(Sregs);
        w.WriteStruct(Fpu);
        w.WriteBool(Xsave is not null);
        if (Xsave is not null) w.WriteBytes(Xsave);
        w.WriteBool(Xcrs.HasValue);
        if (Xcrs is { } xcrs) w.WriteStruct(xcrs);
        w.WriteStructs<KvmMsrEntry>(Msrs);
        w.WriteStruct(Lapic);
        w.WriteStruct(Events);
        w.WriteStruct(MpState);
        w.WriteBool(DebugRegs.HasValue);
        if (DebugRegs is { } debug) w.WriteStruct(debug);
        w.WriteUInt32(TscKhz);
    }

    public static VcpuState Read(StateReader r) => new()
    {
        Regs = r.ReadStruct<KvmRegs>("vCPU registers"),
        Sregs = r.ReadStruct<KvmSregs>("vCPU special registers"),
        Fpu = r.ReadStruct<KvmFpu>("vCPU FPU"),
        Xsave = r.ReadBool("XSAVE present") ? ReadXsave(r) : null,
        Xcrs = r.ReadBool("XCRs present") ? ReadXcrs(r) : null,
        Msrs = r.ReadStructs<KvmMsrEntry>("MSRs", MaxMsrs),
        Lapic = r.ReadStruct<KvmLapicState>("local APIC"),
        Events = r.ReadStruct<KvmVcpuEvents>("vCPU events"),
        MpState = r.ReadStruct<KvmMpState>("MP state"),
        DebugRegs = r.ReadBool("debug registers present") ? r.ReadStruct<KvmDebugRegs>("debug registers") : null,
        TscKhz = r.ReadUInt32("TSC frequency"),
    };

    private static byte[] ReadXsave(StateReader r)
    {
        byte[] area = r.ReadBytes("XSAVE area", MaxXsaveBytes);
        if (area.Length < 4096) throw new StateFormatException($"XSAVE area: {area.Length} bytes, at least 4096 expected");
        return area;
    }

    private static KvmXcrs ReadXcrs(StateReader r)
    {
        var xcrs = r.ReadStruct<KvmXcrs>("XCRs");
        if (xcrs.Count > 16) throw new StateFormatException($"XCRs: {xcrs.Count} registers, at most 16");
        return xcrs;
    }
}
