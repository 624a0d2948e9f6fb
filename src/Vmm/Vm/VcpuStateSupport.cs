using Vmm.Kvm;
using Vmm.Kvm.Interop;

namespace Vmm.Vm;

/// <summary>Which parts of a vCPU's state this host's KVM can save and restore, asked once per VM, and the
/// MSRs worth saving: KVM_GET_MSR_INDEX_LIST names every MSR KVM knows, but a vCPU refuses those its CPUID
/// does not have, so the list is narrowed on the first read.</summary>
public sealed class VcpuStateSupport
{
    private readonly object _lock = new();
    private uint[] _msrIndexes;
    private bool _msrsNarrowed;

    public VcpuStateSupport(KvmSystem kvm, KvmVm vm)
    {
        Xsave = vm.CheckExtension(KvmCapability.Xsave) > 0;
        XsaveBytes = Math.Max(4096, vm.CheckExtension(KvmCapability.Xsave2));
        Xcrs = vm.CheckExtension(KvmCapability.Xcrs) > 0;
        DebugRegs = vm.CheckExtension(KvmCapability.Debugregs) > 0;
        TscControl = vm.CheckExtension(KvmCapability.TscControl) > 0;
        _msrIndexes = kvm.GetMsrIndexList();
    }

    public bool Xsave { get; }
    public int XsaveBytes { get; }
    public bool Xcrs { get; }
    public bool DebugRegs { get; }
    public bool TscControl { get; }

    public KvmMsrEntry[] ReadMsrs(KvmVcpu vcpu)
    {
        lock (_lock)
        {
            var entries = _msrIndexes.Select(i => new KvmMsrEntry { Index = i }).ToArray();
            if (_msrsNarrowed)
            {
                int read = vcpu.GetMsrs(entries);
                if (read != entries.Length) throw new KvmException($"KVM_GET_MSRS (MSR 0x{entries[read].Index:x} refused)", 22);
                return entries;
            }
            // KVM stops at the first MSR it refuses: drop it and go on from the next.
            var kept = new List<KvmMsrEntry>();
            int start = 0;
            while (start < entries.Length)
            {
                var rest = entries.AsSpan(start);
                int read = vcpu.GetMsrs(rest);
                kept.AddRange(rest[..read].ToArray());
                start += read + 1;
            }
            _msrIndexes = kept.Select(e => e.Index).ToArray();
            _msrsNarrowed = true;
            return kept.ToArray();
        }
    }
}
