using System.Runtime.CompilerServices;
using Vmm.Kvm.Interop;
using Xunit;

namespace Vmm.Tests.Kvm;

/// <summary>The structs and ioctl numbers that cross into the kernel, checked against the kernel's own
/// headers: a C program compiled from &lt;linux/kvm.h&gt; prints sizeof and the ioctl constants.</summary>
public sealed class KvmAbiTests
{
    private static readonly (string CName, int ManagedSize)[] Structs =
    [
        ("struct kvm_userspace_memory_region", Unsafe.SizeOf<KvmUserspaceMemoryRegion>()),
        ("struct kvm_regs", Unsafe.SizeOf<KvmRegs>()),
        ("struct kvm_segment", Unsafe.SizeOf<KvmSegment>()),
        ("struct kvm_dtable", Unsafe.SizeOf<KvmDtable>()),
        ("struct kvm_sregs", Unsafe.SizeOf<KvmSregs>()),
        ("struct kvm_fpu", Unsafe.SizeOf<KvmFpu>()),
        ("struct kvm_msr_entry", Unsafe.SizeOf<KvmMsrEntry>()),
        ("struct kvm_msrs", Unsafe.SizeOf<KvmMsrsHeader>()),
        ("struct kvm_cpuid_entry2", Unsafe.SizeOf<KvmCpuidEntry2>()),
        ("struct kvm_cpuid2", Unsafe.SizeOf<KvmCpuid2Header>()),
        ("struct kvm_lapic_state", Unsafe.SizeOf<KvmLapicState>()),
        ("struct kvm_pit_config", Unsafe.SizeOf<KvmPitConfig>()),
        ("struct kvm_irq_level", Unsafe.SizeOf<KvmIrqLevel>()),
        ("struct kvm_vcpu_events", Unsafe.SizeOf<KvmVcpuEvents>()),
        ("struct kvm_irqfd", Unsafe.SizeOf<KvmIrqfd>()),
        ("struct kvm_ioeventfd", Unsafe.SizeOf<KvmIoeventfd>()),
        ("struct kvm_dirty_log", Unsafe.SizeOf<KvmDirtyLog>()),
        ("struct kvm_translation", Unsafe.SizeOf<KvmTranslation>()),
        ("struct kvm_irqchip", Unsafe.SizeOf<KvmIrqchip>()),
        ("struct kvm_pit_state2", Unsafe.SizeOf<KvmPitState2>()),
        ("struct kvm_clock_data", Unsafe.SizeOf<KvmClockData>()),
        ("struct kvm_mp_state", Unsafe.SizeOf<KvmMpState>()),
        ("struct kvm_debugregs", Unsafe.SizeOf<KvmDebugRegs>()),
        ("struct kvm_xsave", Unsafe.SizeOf<KvmXsave>()),
        ("struct kvm_xcrs", Unsafe.SizeOf<KvmXcrs>()),
        ("struct kvm_clear_dirty_log", Unsafe.SizeOf<KvmClearDirtyLog>()),
        ("struct kvm_enable_cap", Unsafe.SizeOf<KvmEnableCap>()),
    ];

    private static readonly (string CName, nuint Managed)[] Ioctls =
    [
        ("KVM_GET_API_VERSION", KvmIoctls.GetApiVersion),
        ("KVM_CREATE_VM", KvmIoctls.CreateVm),
        ("KVM_GET_MSR_INDEX_LIST", KvmIoctls.GetMsrIndexList),
        ("KVM_CHECK_EXTENSION", KvmIoctls.CheckExtension),
        ("KVM_GET_VCPU_MMAP_SIZE", KvmIoctls.GetVcpuMmapSize),
        ("KVM_GET_SUPPORTED_CPUID", KvmIoctls.GetSupportedCpuid),
        ("KVM_CREATE_VCPU", KvmIoctls.CreateVcpu),
        ("KVM_GET_DIRTY_LOG", KvmIoctls.GetDirtyLog),
        ("KVM_SET_USER_MEMORY_REGION", KvmIoctls.SetUserMemoryRegion),
        ("KVM_SET_TSS_ADDR", KvmIoctls.SetTssAddr),
        ("KVM_SET_IDENTITY_MAP_ADDR", KvmIoctls.SetIdentityMapAddr),
        ("KVM_CREATE_IRQCHIP", KvmIoctls.CreateIrqchip),
        ("KVM_IRQ_LINE", KvmIoctls.IrqLine),
        ("KVM_IRQFD", KvmIoctls.Irqfd),
        ("KVM_CREATE_PIT2", KvmIoctls.CreatePit2),
        ("KVM_IOEVENTFD", KvmIoctls.Ioeventfd),
        ("KVM_RUN", KvmIoctls.Run),
        ("KVM_GET_REGS", KvmIoctls.GetRegs),
        ("KVM_SET_REGS", KvmIoctls.SetRegs),
        ("KVM_GET_SREGS", KvmIoctls.GetSregs),
        ("KVM_SET_SREGS", KvmIoctls.SetSregs),
        ("KVM_TRANSLATE", KvmIoctls.Translate),
        ("KVM_GET_MSRS", KvmIoctls.GetMsrs),
        ("KVM_SET_MSRS", KvmIoctls.SetMsrs),
        ("KVM_GET_FPU", KvmIoctls.GetFpu),
        ("KVM_SET_FPU", KvmIoctls.SetFpu),
        ("KVM_GET_LAPIC", KvmIoctls.GetLapic),
        ("KVM_SET_LAPIC", KvmIoctls.SetLapic),
        ("KVM_SET_CPUID2", KvmIoctls.SetCpuid2),
        ("KVM_GET_CPUID2", KvmIoctls.GetCpuid2),
        ("KVM_GET_VCPU_EVENTS", KvmIoctls.GetVcpuEvents),
        ("KVM_SET_VCPU_EVENTS", KvmIoctls.SetVcpuEvents),
        ("KVM_GET_IRQCHIP", KvmIoctls.GetIrqchip),
        ("KVM_SET_IRQCHIP", KvmIoctls.SetIrqchip),
        ("KVM_GET_CLOCK", KvmIoctls.GetClock),
        ("KVM_SET_CLOCK", KvmIoctls.SetClock),
        ("KVM_GET_PIT2", KvmIoctls.GetPit2),
        ("KVM_SET_PIT2", KvmIoctls.SetPit2),
        ("KVM_ENABLE_CAP", KvmIoctls.EnableCap),
        ("KVM_CLEAR_DIRTY_LOG", KvmIoctls.ClearDirtyLog),
        ("KVM_RESET_DIRTY_RINGS", KvmIoctls.ResetDirtyRings),
        ("KVM_GET_MP_STATE", KvmIoctls.GetMpState),
        ("KVM_SET_MP_STATE", KvmIoctls.SetMpState),
        ("KVM_GET_DEBUGREGS", KvmIoctls.GetDebugRegs),
        ("KVM_SET_DEBUGREGS", KvmIoctls.SetDebugRegs),
        ("KVM_SET_TSC_KHZ", KvmIoctls.SetTscKhz),
        ("KVM_GET_TSC_KHZ", KvmIoctls.GetTscKhz),
        ("KVM_GET_XSAVE", KvmIoctls.GetXsave),
        ("KVM_SET_XSAVE", KvmIoctls.SetXsave),
        ("KVM_GET_XCRS", KvmIoctls.GetXcrs),
        ("KVM_SET_XCRS", KvmIoctls.SetXcrs),
        ("KVM_GET_XSAVE2", KvmIoctls.GetXsave2),
        ("KVM_KVMCLOCK_CTRL", KvmIoctls.KvmclockCtrl),
    ];

    [Fact]
    public void StructSizes_MatchTheKernelHeaders()
    {
        var fromHeaders = RunHeaderProbe(Structs.Select(s => $"printf(\"%zu\\n\", sizeof({s.CName}));"));
        var mismatches = Structs.Zip(fromHeaders)
            .Where(p => p.First.ManagedSize.ToString() != p.Second)
            .Select(p => $"{p.First.CName}: managed {p.First.ManagedSize}, kernel {p.Second}").ToList();
        Assert.Empty(mismatches);
    }

    [Fact]
    public void IoctlNumbers_MatchTheKernelHeaders()
    {
        var fromHeaders = RunHeaderProbe(Ioctls.Select(i => $"printf(\"%lx\\n\", (unsigned long){i.CName});"));
        var mismatches = Ioctls.Zip(fromHeaders)
            .Where(p => p.First.Managed.ToString("x") != p.Second)
            .Select(p => $"{p.First.CName}: managed 0x{p.First.Managed:x}, kernel 0x{p.Second}").ToList();
        Assert.Empty(mismatches);
    }

    [Fact]
    public void KnownIoctlNumbers_AreEncodedLikeTheKernelMacros()
    {
        // Spot checks that hold even without the headers: _IO(0xAE,0x80), _IOR(0xAE,0x81,144), _IOWR(0xAE,0x05,8).
        Assert.Equal((nuint)0xAE80, KvmIoctls.Run);
        Assert.Equal((nuint)0x8090AE81, KvmIoctls.GetRegs);
        Assert.Equal((nuint)0xC008AE05, KvmIoctls.GetSupportedCpuid);
    }

    /// <summary>Compiles and runs a C program against &lt;linux/kvm.h&gt;; returns its output lines.</summary>
    private static string[] RunHeaderProbe(IEnumerable<string> statements)
    {
        Assert.True(File.Exists("/usr/include/linux/kvm.h"), "linux/kvm.h is missing: install linux-libc-dev (the test setup does)");
        string dir = Directory.CreateTempSubdirectory("vmm-abi-").FullName;
        try
        {
            string source = Path.Combine(dir, "probe.c"), binary = Path.Combine(dir, "probe");
            File.WriteAllText(source, "#include <stdio.h>\n#include <linux/kvm.h>\nint main(void) {\n" + string.Join("\n", statements) + "\nreturn 0; }\n");
            HostCommand.Checked("gcc", "-o", binary, source);
            return HostCommand.Checked(binary).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
