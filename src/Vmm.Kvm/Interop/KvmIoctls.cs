namespace Vmm.Kvm.Interop;

/// <summary>KVM ioctl request numbers, computed the way <c>_IO/_IOR/_IOW/_IOWR</c> do in
/// <c>asm-generic/ioctl.h</c>, from the struct sizes above (so a size mistake shows up in one test).</summary>
public static unsafe class KvmIoctls
{
    private const uint KvmIo = 0xAE;
    private const uint None = 0, Write = 1, Read = 2;

    private static nuint Encode(uint direction, uint number, int size) =>
        (direction << 30) | ((uint)size << 16) | (KvmIo << 8) | number;

    private static nuint Io(uint number) => Encode(None, number, 0);
    private static nuint IoR(uint number, int size) => Encode(Read, number, size);
    private static nuint IoW(uint number, int size) => Encode(Write, number, size);
    private static nuint IoWR(uint number, int size) => Encode(Read | Write, number, size);

    // System ioctls (/dev/kvm).
    public static readonly nuint GetApiVersion = Io(0x00);
    public static readonly nuint CreateVm = Io(0x01);
    public static readonly nuint GetMsrIndexList = IoWR(0x02, sizeof(uint));
    public static readonly nuint CheckExtension = Io(0x03);
    public static readonly nuint GetVcpuMmapSize = Io(0x04);
    public static readonly nuint GetSupportedCpuid = IoWR(0x05, sizeof(KvmCpuid2Header));

    // VM ioctls.
    public static readonly nuint CreateVcpu = Io(0x41);
    public static readonly nuint GetDirtyLog = IoW(0x42, sizeof(KvmDirtyLog));
    public static readonly nuint SetUserMemoryRegion = IoW(0x46, sizeof(KvmUserspaceMemoryRegion));
    public static readonly nuint SetTssAddr = Io(0x47);
    public static readonly nuint SetIdentityMapAddr = IoW(0x48, sizeof(ulong));
    public static readonly nuint CreateIrqchip = Io(0x60);
    public static readonly nuint IrqLine = IoW(0x61, sizeof(KvmIrqLevel));
    public static readonly nuint Irqfd = IoW(0x76, sizeof(KvmIrqfd));
    public static readonly nuint CreatePit2 = IoW(0x77, sizeof(KvmPitConfig));
    public static readonly nuint Ioeventfd = IoW(0x79, sizeof(KvmIoeventfd));
    public static readonly nuint GetIrqchip = IoWR(0x62, sizeof(KvmIrqchip));
    // The kernel declares KVM_SET_IRQCHIP with _IOR although it reads the struct.
    public static readonly nuint SetIrqchip = IoR(0x63, sizeof(KvmIrqchip));
    public static readonly nuint SetClock = IoW(0x7b, sizeof(KvmClockData));
    public static readonly nuint GetClock = IoR(0x7c, sizeof(KvmClockData));
    public static readonly nuint GetPit2 = IoR(0x9f, sizeof(KvmPitState2));
    public static readonly nuint SetPit2 = IoW(0xa0, sizeof(KvmPitState2));
    public static readonly nuint EnableCap = IoW(0xa3, sizeof(KvmEnableCap));
    public static readonly nuint ClearDirtyLog = IoWR(0xc0, sizeof(KvmClearDirtyLog));
    public static readonly nuint ResetDirtyRings = Io(0xc7);

    // vCPU ioctls.
    public static readonly nuint Run = Io(0x80);
    public static readonly nuint GetRegs = IoR(0x81, sizeof(KvmRegs));
    public static readonly nuint SetRegs = IoW(0x82, sizeof(KvmRegs));
    public static readonly nuint GetSregs = IoR(0x83, sizeof(KvmSregs));
    public static readonly nuint SetSregs = IoW(0x84, sizeof(KvmSregs));
    public static readonly nuint Translate = IoWR(0x85, sizeof(KvmTranslation));
    public static readonly nuint GetMsrs = IoWR(0x88, sizeof(KvmMsrsHeader));
    public static readonly nuint SetMsrs = IoW(0x89, sizeof(KvmMsrsHeader));
    public static readonly nuint GetFpu = IoR(0x8c, sizeof(KvmFpu));
    public static readonly nuint SetFpu = IoW(0x8d, sizeof(KvmFpu));
    public static readonly nuint GetLapic = IoR(0x8e, sizeof(KvmLapicState));
    public static readonly nuint SetLapic = IoW(0x8f, sizeof(KvmLapicState));
    public static readonly nuint SetCpuid2 = IoW(0x90, sizeof(KvmCpuid2Header));
    public static readonly nuint GetCpuid2 = IoWR(0x91, sizeof(KvmCpuid2Header));
    public static readonly nuint GetVcpuEvents = IoR(0x9f, sizeof(KvmVcpuEvents));
    public static readonly nuint SetVcpuEvents = IoW(0xa0, sizeof(KvmVcpuEvents));
    public static readonly nuint GetMpState = IoR(0x98, sizeof(KvmMpState));
    public static readonly nuint SetMpState = IoW(0x99, sizeof(KvmMpState));
    public static readonly nuint GetDebugRegs = IoR(0xa1, sizeof(KvmDebugRegs));
    public static readonly nuint SetDebugRegs = IoW(0xa2, sizeof(KvmDebugRegs));
    public static readonly nuint SetTscKhz = Io(0xa2);
    public static readonly nuint GetTscKhz = Io(0xa3);
    public static readonly nuint GetXsave = IoR(0xa4, sizeof(KvmXsave));
    public static readonly nuint SetXsave = IoW(0xa5, sizeof(KvmXsave));
    public static readonly nuint GetXcrs = IoR(0xa6, sizeof(KvmXcrs));
    public static readonly nuint SetXcrs = IoW(0xa7, sizeof(KvmXcrs));
    public static readonly nuint GetXsave2 = IoR(0xcf, sizeof(KvmXsave));
    public static readonly nuint KvmclockCtrl = Io(0xad);
}
