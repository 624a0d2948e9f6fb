using System.Buffers.Binary;
using Vmm.Arch;

namespace Vmm.Boot;

/// <summary>The zero page (<c>struct boot_params</c>, arch/x86/include/uapi/asm/bootparam.h) that the
/// kernel finds through RSI/ESI at entry. Offsets are the header's.</summary>
public sealed class BootParams
{
    public const int SizeBytes = 4096;
    public const int MaxE820Entries = 128;

    private const int ExtRamdiskImage = 0x0c0, ExtRamdiskSize = 0x0c4, ExtCmdLinePtr = 0x0c8;
    private const int E820EntriesCount = 0x1e8, E820Table = 0x2d0;
    private const int BootFlag = 0x1fe, HeaderMagic = 0x202, Version = 0x206;
    private const int TypeOfLoader = 0x210, LoadFlags = 0x211, Code32Start = 0x214;
    private const int RamdiskImage = 0x218, RamdiskSize = 0x21c, HeapEndPtr = 0x224;
    private const int CmdLinePtr = 0x228, KernelAlignment = 0x230, CmdLineSize = 0x238;

    private const byte LoadedHigh = 0x01, CanUseHeap = 0x80;
    private const byte UndefinedLoader = 0xff;

    private readonly byte[] _bytes = new byte[SizeBytes];

    public ReadOnlySpan<byte> Bytes => _bytes;

    /// <summary>Starts from a bzImage's own setup header, as the boot protocol asks.</summary>
    public static BootParams FromSetupHeader(ReadOnlySpan<byte> setupHeader, uint code32Start)
    {
        var p = new BootParams();
        setupHeader.CopyTo(p._bytes.AsSpan(BzImageHeader.SetupHeaderOffset));
        p.Set32(Code32Start, code32Start);
        p.Finish();
        return p;
    }

    /// <summary>For an ELF vmlinux, which has no setup header: write the fields the kernel checks.</summary>
    public static BootParams Synthesized(uint commandLineMaxBytes)
    {
        var p = new BootParams();
        p.Set16(BootFlag, 0xaa55);
        p.Set32(HeaderMagic, 0x53726448);
        p.Set16(Version, 0x020f);
        p.Set32(KernelAlignment, 0x0100_0000);
        p.Set32(CmdLineSize, commandLineMaxBytes);
        p._bytes[LoadFlags] = LoadedHigh;
        p.Finish();
        return p;
    }

    private void Finish()
    {
        _bytes[TypeOfLoader] = UndefinedLoader;
        _bytes[LoadFlags] |= CanUseHeap;
        Set16(HeapEndPtr, 0xfe00);
    }

    public void SetCommandLine(ulong address)
    {
        Set32(CmdLinePtr, (uint)address);
        Set32(ExtCmdLinePtr, (uint)(address >> 32));
    }

    public void SetInitrd(ulong address, ulong sizeBytes)
    {
        Set32(RamdiskImage, (uint)address);
        Set32(ExtRamdiskImage, (uint)(address >> 32));
        Set32(RamdiskSize, (uint)sizeBytes);
        Set32(ExtRamdiskSize, (uint)(sizeBytes >> 32));
    }

    public void SetE820(IReadOnlyList<E820Entry> entries)
    {
        if (entries.Count > MaxE820Entries) throw new ArgumentException($"at most {MaxE820Entries} e820 entries");
        _bytes[E820EntriesCount] = (byte)entries.Count;
        for (int i = 0; i < entries.Count; i++)
        {
            Span<byte> slot = _bytes.AsSpan(E820Table + i * E820Entry.SizeInZeroPage, E820Entry.SizeInZeroPage);
            BinaryPrimitives.WriteUInt64LittleEndian(slot, entries[i].Address);
            BinaryPrimitives.WriteUInt64LittleEndian(slot[8..], entries[i].SizeBytes);
            BinaryPrimitives.WriteUInt32LittleEndian(slot[16..], (uint)entries[i].Type);
        }
    }

    public ulong CommandLineAddress => Get32(CmdLinePtr) | ((ulong)Get32(ExtCmdLinePtr) << 32);
    public ulong InitrdAddress => Get32(RamdiskImage) | ((ulong)Get32(ExtRamdiskImage) << 32);
    public ulong InitrdSizeBytes => Get32(RamdiskSize) | ((ulong)Get32(ExtRamdiskSize) << 32);
    public byte TypeOfLoaderValue => _bytes[TypeOfLoader];

    public IReadOnlyList<E820Entry> E820 => Enumerable.Range(0, _bytes[E820EntriesCount]).Select(i =>
    {
        ReadOnlySpan<byte> slot = _bytes.AsSpan(E820Table + i * E820Entry.SizeInZeroPage, E820Entry.SizeInZeroPage);
        return new E820Entry(BinaryPrimitives.ReadUInt64LittleEndian(slot), BinaryPrimitives.ReadUInt64LittleEndian(slot[8..]),
            (E820Type)BinaryPrimitives.ReadUInt32LittleEndian(slot[16..]));
    }).ToList();

    private uint Get32(int offset) => BinaryPrimitives.ReadUInt32LittleEndian(_bytes.AsSpan(offset));
    private void Set16(int offset, ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(_bytes.AsSpan(offset), value);
    private void Set32(int offset, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(_bytes.AsSpan(offset), value);
}
