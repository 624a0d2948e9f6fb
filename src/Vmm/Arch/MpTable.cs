using System.Buffers.Binary;
using System.Text;

namespace Vmm.Arch;

/// <summary>An Intel MultiProcessor Specification 1.4 table: how a guest without ACPI learns its CPUs, the
/// ISA bus and the IOAPIC with its interrupt wiring. Placed at the EBDA (0x9fc00, in the last KiB of base
/// memory that Linux scans for the "_MP_" floating pointer), reserved in the e820 map.</summary>
public static class MpTable
{
    public const ulong Address = X86Layout.EbdaAddress;
    public const int MaxBytes = 1024;
    public const int IsaIrqCount = 16;

    private const int FloatingPointerBytes = 16, HeaderBytes = 44;
    private const int ProcessorEntryBytes = 20, ShortEntryBytes = 8;
    private const byte SpecRevision = 4; // MP spec 1.4
    private const byte EntryProcessor = 0, EntryBus = 1, EntryIoApic = 2, EntryIoInterrupt = 3, EntryLocalInterrupt = 4;
    private const byte InterruptInt = 0, InterruptNmi = 1, InterruptExtInt = 3;
    private const byte CpuEnabled = 1, CpuBootstrap = 2;
    private const byte LocalApicVersion = 0x14, IoApicVersion = 0x11;
    private const byte IsaBusId = 0;

    /// <summary>The table for <paramref name="vcpuCount"/> CPUs with APIC IDs 0..N-1; the IOAPIC gets ID N.</summary>
    public static byte[] Build(int vcpuCount, uint cpuSignature, uint cpuFeatures)
    {
        int entries = vcpuCount + 1 + 1 + IsaIrqCount + 2;
        int tableBytes = HeaderBytes + vcpuCount * ProcessorEntryBytes + (entries - vcpuCount) * ShortEntryBytes;
        if (FloatingPointerBytes + tableBytes > MaxBytes)
            throw new ArgumentOutOfRangeException(nameof(vcpuCount), $"an MP table for {vcpuCount} CPUs does not fit in {MaxBytes} bytes");
        byte[] bytes = new byte[FloatingPointerBytes + tableBytes];
        Span<byte> pointer = bytes.AsSpan(0, FloatingPointerBytes);
        Span<byte> table = bytes.AsSpan(FloatingPointerBytes);

        Encoding.ASCII.GetBytes("_MP_", pointer);
        BinaryPrimitives.WriteUInt32LittleEndian(pointer[4..], (uint)(Address + FloatingPointerBytes));
        pointer[8] = 1; // length in 16-byte units
        pointer[9] = SpecRevision;
        // Feature bytes all zero: a configuration table is present (no default configuration).
        pointer[10] = Checksum(pointer);

        Encoding.ASCII.GetBytes("PCMP", table);
        BinaryPrimitives.WriteUInt16LittleEndian(table[4..], (ushort)tableBytes);
        table[6] = SpecRevision;
        Encoding.ASCII.GetBytes("VMM     ", table[8..16]);
        Encoding.ASCII.GetBytes("VMM-X86-64  ", table[16..28]);
        BinaryPrimitives.WriteUInt16LittleEndian(table[34..], (ushort)entries);
        BinaryPrimitives.WriteUInt32LittleEndian(table[36..], (uint)X86Layout.LocalApicAddress);

        int offset = HeaderBytes;
        for (int cpu = 0; cpu < vcpuCount; cpu++)
        {
            Span<byte> e = table.Slice(offset, ProcessorEntryBytes);
            e[0] = EntryProcessor;
            e[1] = (byte)cpu;
            e[2] = LocalApicVersion;
            e[3] = (byte)(CpuEnabled | (cpu == 0 ? CpuBootstrap : 0));
            BinaryPrimitives.WriteUInt32LittleEndian(e[4..], cpuSignature);
            BinaryPrimitives.WriteUInt32LittleEndian(e[8..], cpuFeatures);
            offset += ProcessorEntryBytes;
        }
        Span<byte> bus = table.Slice(offset, ShortEntryBytes);
        bus[0] = EntryBus;
        bus[1] = IsaBusId;
        Encoding.ASCII.GetBytes("ISA   ", bus[2..8]);
        offset += ShortEntryBytes;

        byte ioApicId = (byte)vcpuCount;
        Span<byte> ioApic = table.Slice(offset, ShortEntryBytes);
        ioApic[0] = EntryIoApic;
        ioApic[1] = ioApicId;
        ioApic[2] = IoApicVersion;
        ioApic[3] = 1; // enabled
        BinaryPrimitives.WriteUInt32LittleEndian(ioApic[4..], (uint)X86Layout.IoApicAddress);
        offset += ShortEntryBytes;

        // ISA IRQ n arrives on IOAPIC pin n: KVM's default GSI routing wires GSI n to PIC pin n and IOAPIC pin n.
        for (byte irq = 0; irq < IsaIrqCount; irq++)
        {
            Span<byte> e = table.Slice(offset, ShortEntryBytes);
            e[0] = EntryIoInterrupt;
            e[1] = InterruptInt;
            e[4] = IsaBusId;
            e[5] = irq;
            e[6] = ioApicId;
            e[7] = irq;
            offset += ShortEntryBytes;
        }
        // Every local APIC's LINT0 is the PIC's ExtINT and LINT1 the NMI line (virtual-wire mode).
        foreach (var (type, lint) in new[] { (InterruptExtInt, (byte)0), (InterruptNmi, (byte)1) })
        {
            Span<byte> e = table.Slice(offset, ShortEntryBytes);
            e[0] = EntryLocalInterrupt;
            e[1] = type;
            e[4] = IsaBusId;
            e[6] = 0xff; // all local APICs
            e[7] = lint;
            offset += ShortEntryBytes;
        }
        table[7] = Checksum(table);
        return bytes;
    }

    /// <summary>The byte that makes a structure's bytes sum to zero (mod 256).</summary>
    private static byte Checksum(ReadOnlySpan<byte> bytes)
    {
        int sum = 0;
        foreach (byte b in bytes) sum += b;
        return (byte)(-sum);
    }
}
