namespace Vmm.Kvm;

/// <summary>KVM_CAP_* numbers from linux/kvm.h that vmm asks about.</summary>
public enum KvmCapability
{
    Irqchip = 0,
    UserMemory = 3,
    SetTssAddr = 4,
    ExtCpuid = 7,
    Pit2 = 33,
    SetIdentityMapAddr = 37,
    Ioeventfd = 36,
    Irqfd = 32,
    VcpuEvents = 41,
    ImmediateExit = 136,
    NrMemslots = 10,
    MaxVcpus = 66,
    AdjustClock = 39,
    Debugregs = 50,
    Xsave = 55,
    Xcrs = 56,
    TscControl = 60,
    ManualDirtyLogProtect2 = 168,
    DirtyLogRing = 192,
    Xsave2 = 208,
}
