using System.Buffers.Binary;
using System.Text;
using Vmm.Arch;
using Xunit;

namespace Vmm.Tests.Arch;

public sealed class MpTableTests
{
    private static int Sum(ReadOnlySpan<byte> bytes)
    {
        int sum = 0;
        foreach (byte b in bytes) sum += b;
        return sum & 0xff;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(32)]
    public void MpTable_FloatingPointerAndTableHaveValidSignaturesLengthsAndChecksums(int cpus)
    {
        byte[] bytes = MpTable.Build(cpus, 0x806f0, 0x178bfbff);

        Assert.Equal("_MP_", Encoding.ASCII.GetString(bytes, 0, 4));
        Assert.Equal((uint)(MpTable.Address + 16), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(4)));
        Assert.Equal(0, Sum(bytes.AsSpan(0, 16)));
        var table = bytes.AsSpan(16);
        Assert.Equal("PCMP", Encoding.ASCII.GetString(table[..4]));
        ushort length = BinaryPrimitives.ReadUInt16LittleEndian(table[4..]);
        Assert.Equal(table.Length, length);
        Assert.Equal(0, Sum(table));
        Assert.Equal(cpus + 1 + 1 + 16 + 2, BinaryPrimitives.ReadUInt16LittleEndian(table[34..]));
        Assert.Equal(0xfee00000u, BinaryPrimitives.ReadUInt32LittleEndian(table[36..]));
        Assert.True(bytes.Length <= MpTable.MaxBytes);
    }

    [Fact]
    public void MpTable_ListsEveryCpuWithItsApicIdAndOnlyCpu0AsBootstrap()
    {
        byte[] bytes = MpTable.Build(3, 0x806f0, 0x178bfbff);
        var entries = bytes.AsSpan(16 + 44);

        for (int cpu = 0; cpu < 3; cpu++)
        {
            var e = entries.Slice(cpu * 20, 20);
            Assert.Equal(0, e[0]);
            Assert.Equal(cpu, e[1]);
            Assert.Equal(cpu == 0 ? 3 : 1, e[3]);
            Assert.Equal(0x806f0u, BinaryPrimitives.ReadUInt32LittleEndian(e[4..]));
        }
        var ioApic = entries.Slice(3 * 20 + 8, 8);
        Assert.Equal(2, ioApic[0]);
        Assert.Equal(3, ioApic[1]); // the IOAPIC's ID follows the CPUs'
        Assert.Equal(0xfec00000u, BinaryPrimitives.ReadUInt32LittleEndian(ioApic[4..]));
    }

    [Fact]
    public void MpTable_RoutesIsaIrqNToIoApicPinN()
    {
        byte[] bytes = MpTable.Build(1, 0, 0);
        var interrupts = bytes.AsSpan(16 + 44 + 20 + 8 + 8);

        for (int irq = 0; irq < 16; irq++)
        {
            var e = interrupts.Slice(irq * 8, 8);
            Assert.Equal(3, e[0]);
            Assert.Equal(irq, e[5]);
            Assert.Equal(1, e[6]);
            Assert.Equal(irq, e[7]);
        }
    }

    [Fact]
    public void MpTable_FitsInTheReservedEbdaAboveTheMemoryBelowIt()
    {
        Assert.Equal(X86Layout.EbdaAddress, MpTable.Address);
        Assert.True(MpTable.Address + MpTable.MaxBytes <= X86Layout.HighMemoryAddress);
    }
}
