using Vmm.Kvm.Interop;

namespace Vmm.Arch;

/// <summary>A segment descriptor in the boot GDT, and the <c>kvm_segment</c> the vCPU's hidden
/// segment state must match (KVM does not read the GDT when we set segment registers).</summary>
public readonly record struct GdtEntry(ushort Flags, uint Base, uint Limit)
{
    // flags: access byte in bits 0-7 (P, DPL, S, type), G/DB/L/AVL in bits 12-15.
    public static readonly GdtEntry Null = new(0, 0, 0);
    public static readonly GdtEntry Code64 = new(0xa09b, 0, 0xfffff);
    public static readonly GdtEntry Code32 = new(0xc09b, 0, 0xfffff);
    public static readonly GdtEntry Data = new(0xc093, 0, 0xfffff);
    public static readonly GdtEntry Tss = new(0x808b, 0, 0xfffff);

    /// <summary>Selectors the boot protocol names: __BOOT_CS = 0x10, __BOOT_DS = 0x18.</summary>
    public const ushort CodeSelector = 0x10, DataSelector = 0x18, TssSelector = 0x20;

    /// <summary>The boot GDT: null, null, code, data, TSS (index = selector / 8).</summary>
    public static GdtEntry[] BootTable(bool longMode) => [Null, Null, longMode ? Code64 : Code32, Data, Tss];

    public ulong Encode() =>
        ((ulong)(Base & 0xff00_0000) << 32)
        | ((ulong)(Flags & 0xf0ff) << 40)
        | ((ulong)(Limit & 0xf_0000) << 32)
        | ((ulong)(Base & 0x00ff_ffff) << 16)
        | (Limit & 0xffff);

    public KvmSegment ToKvmSegment(ushort selector)
    {
        bool granularity = (Flags & 0x8000) != 0;
        return new KvmSegment
        {
            Base = Base,
            Limit = granularity ? (Limit << 12) | 0xfff : Limit,
            Selector = selector,
            Type = (byte)(Flags & 0xf),
            Present = (byte)((Flags >> 7) & 1),
            Dpl = (byte)((Flags >> 5) & 3),
            S = (byte)((Flags >> 4) & 1),
            L = (byte)((Flags >> 13) & 1),
            Db = (byte)((Flags >> 14) & 1),
            G = (byte)((Flags >> 15) & 1),
            Avl = (byte)((Flags >> 12) & 1),
            Unusable = (byte)(((Flags >> 7) & 1) == 0 ? 1 : 0),
        };
    }
}
