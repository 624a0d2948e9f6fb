using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

// Mirrors of <linux/kvm.h> and <asm/kvm.h> (x86_64). Every size is checked by a test against the
// kernel header's sizeof, because a wrong size here changes the ioctl number or corrupts memory.
namespace Vmm.Kvm.Interop;

[StructLayout(LayoutKind.Sequential)]
public struct KvmUserspaceMemoryRegion
{
    public uint Slot;
    public uint Flags;
    public ulong GuestPhysAddr;
    public ulong MemorySize;
    public ulong UserspaceAddr;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmRegs
{
    public ulong Rax, Rbx, Rcx, Rdx, Rsi, Rdi, Rsp, Rbp;
    public ulong R8, R9, R10, R11, R12, R13, R14, R15;
    public ulong Rip, Rflags;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmSegment
{
    public ulong Base;
    public uint Limit;
    public ushort Selector;
    public byte Type;
    public byte Present, Dpl, Db, S, L, G, Avl;
    public byte Unusable;
    public byte Padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmDtable
{
    public ulong Base;
    public ushort Limit;
    public ushort Padding0, Padding1, Padding2;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmSregs
{
    public KvmSegment Cs, Ds, Es, Fs, Gs, Ss, Tr, Ldt;
    public KvmDtable Gdt, Idt;
    public ulong Cr0, Cr2, Cr3, Cr4, Cr8;
    public ulong Efer;
    public ulong ApicBase;
    public InterruptBitmap InterruptBitmap;
}

[InlineArray(4)]
public struct InterruptBitmap { private ulong _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmFpu
{
    public FpuRegisters Fpr;
    public ushort Fcw;
    public ushort Fsw;
    public byte Ftwx;
    public byte Pad1;
    public ushort LastOpcode;
    public ulong LastIp;
    public ulong LastDp;
    public XmmRegisters Xmm;
    public uint Mxcsr;
    public uint Pad2;
}

[InlineArray(128)]
public struct FpuRegisters { private byte _element; }

[InlineArray(256)]
public struct XmmRegisters { private byte _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmMsrEntry
{
    public uint Index;
    public uint Reserved;
    public ulong Data;
}

/// <summary>Header of struct kvm_msrs; the entries follow it in the same buffer.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct KvmMsrsHeader
{
    public uint Count;
    public uint Pad;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmCpuidEntry2
{
    public uint Function;
    public uint Index;
    public uint Flags;
    public uint Eax, Ebx, Ecx, Edx;
    public uint Padding0, Padding1, Padding2;
}

/// <summary>Header of struct kvm_cpuid2; the entries follow it in the same buffer.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct KvmCpuid2Header
{
    public uint Count;
    public uint Padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmLapicState
{
    public LapicRegisters Registers;
}

[InlineArray(1024)]
public struct LapicRegisters { private byte _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmPitConfig
{
    public uint Flags;
    public PitConfigPad Pad;
}

[InlineArray(15)]
public struct PitConfigPad { private uint _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmIrqLevel
{
    public uint Irq;
    public uint Level;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmVcpuEvents
{
    public byte ExceptionInjected;
    public byte ExceptionNr;
    public byte ExceptionHasErrorCode;
    public byte ExceptionPending;
    public uint ExceptionErrorCode;
    public byte InterruptInjected;
    public byte InterruptNr;
    public byte InterruptSoft;
    public byte InterruptShadow;
    public byte NmiInjected;
    public byte NmiPending;
    public byte NmiMasked;
    public byte NmiPad;
    public uint SipiVector;
    public uint Flags;
    public byte SmiSmm;
    public byte SmiPending;
    public byte SmiInsideNmi;
    public byte SmiLatchedInit;
    public byte TripleFaultPending;
    public VcpuEventsReserved Reserved;
    public byte ExceptionHasPayload;
    public ulong ExceptionPayload;
}

[InlineArray(26)]
public struct VcpuEventsReserved { private byte _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmIrqfd
{
    public uint Fd;
    public uint Gsi;
    public uint Flags;
    public uint ResampleFd;
    public IrqfdPad Pad;
}

[InlineArray(16)]
public struct IrqfdPad { private byte _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmIoeventfd
{
    public ulong Datamatch;
    public ulong Addr;
    public uint Len;
    public int Fd;
    public uint Flags;
    public IoeventfdPad Pad;
}

[InlineArray(36)]
public struct IoeventfdPad { private byte _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmDirtyLog
{
    public uint Slot;
    public uint Padding;
    public ulong DirtyBitmap;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmTranslation
{
    public ulong LinearAddress;
    public ulong PhysicalAddress;
    public byte Valid;
    public byte Writeable;
    public byte Usermode;
    public TranslationPad Pad;
}

[InlineArray(5)]
public struct TranslationPad { private byte _element; }

/// <summary>struct kvm_irqchip: chip 0 is the master PIC, 1 the slave PIC, 2 the IOAPIC; the state is a
/// 512-byte union that vmm saves and restores without looking inside.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct KvmIrqchip
{
    public uint ChipId;
    public uint Pad;
    public IrqchipState State;
}

[InlineArray(512)]
public struct IrqchipState { private byte _element; }

/// <summary>struct kvm_pit_state2 (three channel states, flags, reserved), saved and restored whole.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct KvmPitState2
{
    public PitState2Bytes Bytes;
}

[InlineArray(112)]
public struct PitState2Bytes { private byte _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmClockData
{
    public ulong Clock;
    public uint Flags;
    public uint Pad0;
    public ulong Realtime;
    public ulong HostTsc;
    public ClockDataPad Pad;
}

[InlineArray(4)]
public struct ClockDataPad { private uint _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmMpState
{
    public uint State;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmDebugRegs
{
    public DebugRegisters Db;
    public ulong Dr6;
    public ulong Dr7;
    public ulong Flags;
    public DebugRegsReserved Reserved;
}

[InlineArray(4)]
public struct DebugRegisters { private ulong _element; }

[InlineArray(9)]
public struct DebugRegsReserved { private ulong _element; }

/// <summary>struct kvm_xsave: the 4 KiB legacy XSAVE area (KVM_GET_XSAVE2 may need more; see
/// <see cref="KvmVcpu.GetXsave"/>).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct KvmXsave
{
    public XsaveRegion Region;
}

[InlineArray(4096)]
public struct XsaveRegion { private byte _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmXcr
{
    public uint Xcr;
    public uint Reserved;
    public ulong Value;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmXcrs
{
    public uint Count;
    public uint Flags;
    public XcrArray Xcrs;
    public XcrsPadding Padding;
}

[InlineArray(16)]
public struct XcrArray { private KvmXcr _element; }

[InlineArray(16)]
public struct XcrsPadding { private ulong _element; }

[StructLayout(LayoutKind.Sequential)]
public struct KvmClearDirtyLog
{
    public uint Slot;
    public uint NumPages;
    public ulong FirstPage;
    public ulong DirtyBitmap;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmEnableCap
{
    public uint Cap;
    public uint Flags;
    public EnableCapArgs Args;
    public EnableCapPad Pad;
}

[InlineArray(4)]
public struct EnableCapArgs { private ulong _element; }

[InlineArray(64)]
public struct EnableCapPad { private byte _element; }
