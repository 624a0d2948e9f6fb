using Vmm.Kvm.Interop;

namespace Vmm.Kvm;

/// <summary>The vCPU's mmapped <c>struct kvm_run</c>. It owns the only raw pointer to that page and hands
/// out bounds-checked views of the exit data, so nothing above it touches the mapping directly.</summary>
public sealed unsafe class KvmRunPage : IDisposable
{
    // Offsets into struct kvm_run (linux/kvm.h, x86_64).
    private const int ImmediateExitOffset = 1;
    private const int ExitReasonOffset = 8;
    private const int ExitUnionOffset = 32;

    private byte* _page;
    private readonly int _sizeBytes;

    private KvmRunPage(byte* page, int sizeBytes)
    {
        _page = page;
        _sizeBytes = sizeBytes;
    }

    internal static KvmRunPage Map(FileDescriptorHandle vcpuFd, int sizeBytes)
    {
        nint address = Libc.Mmap(0, (nuint)sizeBytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, vcpuFd.Number, 0);
        if (address == Libc.MapFailed) throw PosixException.FromLastError("mmap", "kvm_run page");
        return new KvmRunPage((byte*)address, sizeBytes);
    }

    public KvmExitReason ExitReason => (KvmExitReason)Read<uint>(ExitReasonOffset);

    /// <summary>Set before kicking the vCPU thread so a KVM_RUN that starts after the kick returns at once.</summary>
    public bool ImmediateExit
    {
        get => _page[ImmediateExitOffset] != 0;
        set => Volatile.Write(ref _page[ImmediateExitOffset], value ? (byte)1 : (byte)0);
    }

    // KVM_EXIT_IO: __u8 direction, size; __u16 port; __u32 count; __u64 data_offset.
    public bool IoIsWrite => Read<byte>(ExitUnionOffset) == 1;
    public int IoSize => Read<byte>(ExitUnionOffset + 1);
    public ushort IoPort => Read<ushort>(ExitUnionOffset + 2);
    public int IoCount => (int)Read<uint>(ExitUnionOffset + 4);

    /// <summary>The bytes of one port access (all <see cref="IoCount"/> repetitions), inside the page.</summary>
    public Span<byte> IoData
    {
        get
        {
            ulong offset = Read<ulong>(ExitUnionOffset + 8);
            ulong length = (ulong)IoSize * (ulong)IoCount;
            if (offset > (ulong)_sizeBytes || length > (ulong)_sizeBytes - offset)
                throw new InvalidOperationException($"KVM_EXIT_IO data at offset {offset}, {length} bytes, lies outside the kvm_run mapping");
            return new Span<byte>(_page + offset, (int)length);
        }
    }

    // KVM_EXIT_MMIO: __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write.
    public ulong MmioAddress => Read<ulong>(ExitUnionOffset);
    public int MmioLength => Math.Min((int)Read<uint>(ExitUnionOffset + 16), 8);
    public bool MmioIsWrite => Read<byte>(ExitUnionOffset + 20) != 0;
    public Span<byte> MmioData => new(_page + ExitUnionOffset + 8, MmioLength);

    // KVM_EXIT_INTERNAL_ERROR: __u32 suberror; __u32 ndata; __u64 data[16].
    public uint InternalSuberror => Read<uint>(ExitUnionOffset);
    public ReadOnlySpan<ulong> InternalData =>
        new(_page + ExitUnionOffset + 8, (int)Math.Min(Read<uint>(ExitUnionOffset + 4), 16u));

    /// <summary>For KVM_INTERNAL_ERROR_EMULATION with KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES:
    /// the bytes KVM fetched at RIP (struct emulation_failure: flags, insn_size, insn_bytes[15]). Empty when
    /// KVM did not supply them.</summary>
    public ReadOnlySpan<byte> EmulationFailureInstructionBytes
    {
        get
        {
            const uint EmulationSuberror = 1;
            const ulong FlagInstructionBytes = 1;
            if (InternalSuberror != EmulationSuberror || Read<uint>(ExitUnionOffset + 4) < 3) return default;
            if ((Read<ulong>(ExitUnionOffset + 8) & FlagInstructionBytes) == 0) return default;
            int size = Math.Min((int)Read<byte>(ExitUnionOffset + 16), 15);
            return new ReadOnlySpan<byte>(_page + ExitUnionOffset + 17, size);
        }
    }

    // KVM_EXIT_SYSTEM_EVENT: __u32 type; ...
    public uint SystemEventType => Read<uint>(ExitUnionOffset);

    // KVM_EXIT_FAIL_ENTRY: __u64 hardware_entry_failure_reason; KVM_EXIT_UNKNOWN: __u64 hardware_exit_reason.
    public ulong HardwareReason => Read<ulong>(ExitUnionOffset);

    private T Read<T>(int offset) where T : unmanaged => *(T*)(_page + offset);

    public void Dispose()
    {
        if (_page == null) return;
        Libc.Munmap((nint)_page, (nuint)_sizeBytes);
        _page = null;
    }
}
