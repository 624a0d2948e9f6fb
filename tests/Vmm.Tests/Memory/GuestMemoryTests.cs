using Vmm.Arch;
using Vmm.Memory;
using Xunit;

namespace Vmm.Tests.Memory;

public sealed class GuestMemoryTests
{
    private const ulong Size = 1UL << 20;

    private static GuestMemory OneMiB() => GuestMemory.Allocate([(0, Size)]);

    [Fact]
    public void GuestMemory_AllocatesRegionsInOrderWithSlotsAndTotal()
    {
        using var memory = GuestMemory.Allocate([(0, 2UL << 20), (0x1000_0000, 1UL << 20)]);
        Assert.Equal(2, memory.Regions.Count);
        Assert.Equal((0u, 0UL, 2UL << 20), (memory.Regions[0].Slot, memory.Regions[0].GuestAddress, memory.Regions[0].SizeBytes));
        Assert.Equal((1u, 0x1000_0000UL, 1UL << 20), (memory.Regions[1].Slot, memory.Regions[1].GuestAddress, memory.Regions[1].SizeBytes));
        Assert.Equal(0x1010_0000UL, memory.Regions[1].EndAddress);
        Assert.Equal(3UL << 20, memory.TotalBytes);
        Assert.NotEqual(0, memory.Regions[0].HostAddress);
    }

    [Fact]
    public void GuestMemory_WithHugePages_StartsEachRegionOn2MiB_AndWorksAsAnyOther()
    {
        using var memory = GuestMemory.Allocate([(0, 6UL << 20), (1UL << 32, 2UL << 20)], hugePages: true);

        Assert.All(memory.Regions, r => Assert.Equal(0L, r.HostAddress % (2L << 20)));
        memory.Write(0x1f_fffe, new byte[] { 1, 2, 3 });
        memory.Write((1UL << 32) + 100, new byte[] { 4 });
        var back = new byte[3];
        memory.Read(0x1f_fffe, back);
        Assert.Equal(new byte[] { 1, 2, 3 }, back);
        Assert.Equal(4, memory.Read<byte>((1UL << 32) + 100));
    }

    [Fact]
    public void GuestMemory_NewMemoryReadsAsZero()
    {
        using var memory = OneMiB();
        var buffer = new byte[64];
        Array.Fill(buffer, (byte)0xee);
        memory.Read(0x4000, buffer);
        Assert.All(buffer, b => Assert.Equal(0, b));
    }

    [Fact]
    public void GuestMemory_WriteThenReadRoundTripsBytes()
    {
        using var memory = OneMiB();
        byte[] data = [1, 2, 3, 4, 5, 0xfe, 0xff];
        memory.Write(0x1234, data);
        var back = new byte[data.Length];
        memory.Read(0x1234, back);
        Assert.Equal(data, back);
        Assert.Equal(0, memory.Read<byte>(0x1233));
        Assert.Equal(0, memory.Read<byte>(0x1234 + (ulong)data.Length));
    }

    [Fact]
    public void GuestMemory_TypedAccessIsLittleEndian()
    {
        using var memory = OneMiB();
        memory.Write(0x100, 0x1122_3344_5566_7788UL);
        Assert.Equal(0x1122_3344_5566_7788UL, memory.Read<ulong>(0x100));
        Assert.Equal(0x5566_7788u, memory.Read<uint>(0x100));
        Assert.Equal((ushort)0x7788, memory.Read<ushort>(0x100));
        Assert.Equal((byte)0x88, memory.Read<byte>(0x100));
        Assert.Equal((byte)0x11, memory.Read<byte>(0x107));

        memory.Write<ushort>(0x200, 0xbeef);
        Assert.Equal((byte)0xef, memory.Read<byte>(0x200));
        Assert.Equal((byte)0xbe, memory.Read<byte>(0x201));
    }

    [Fact]
    public void GuestMemory_GetSpanAliasesGuestRam()
    {
        using var memory = OneMiB();
        memory.GetSpan(0x3000, 4).Fill(0xab);
        Assert.Equal(0xababababu, memory.Read<uint>(0x3000));
    }

    [Fact]
    public void GuestMemory_AccessEndingExactlyAtRegionEndSucceeds()
    {
        using var memory = OneMiB();
        memory.Write(Size - 8, 0xdead_beef_cafe_f00dUL);
        Assert.Equal(0xdead_beef_cafe_f00dUL, memory.Read<ulong>(Size - 8));
        memory.Write<byte>(Size - 1, 0x5a);
        Assert.Equal((byte)0x5a, memory.Read<byte>(Size - 1));
        Assert.Equal(0, memory.GetSpan(Size, 0).Length);
        Assert.True(memory.IsRam(0, Size));
        Assert.True(memory.IsRam(Size - 1, 1));
    }

    [Fact]
    public void GuestMemory_OneBytePastRegionEndThrowsWithAddress()
    {
        using var memory = OneMiB();
        var e = Assert.Throws<GuestMemoryException>(() => memory.Read<ulong>(Size - 7));
        Assert.Equal(Size - 7, e.Address);
        Assert.Equal(8UL, e.LengthBytes);
        Assert.Contains("0xffff9+0x8", e.Message);
        Assert.Contains("not inside guest RAM", e.Message);

        var e2 = Assert.Throws<GuestMemoryException>(() => memory.Write<byte>(Size, 1));
        Assert.Equal(Size, e2.Address);
        Assert.False(memory.IsRam(Size - 1, 2));
        Assert.False(memory.IsRam(Size, 1));
    }

    [Fact]
    public void GuestMemory_FailedWriteChangesNothing()
    {
        using var memory = OneMiB();
        Assert.Throws<GuestMemoryException>(() => memory.Write(Size - 2, new byte[] { 1, 2, 3 }));
        Assert.Equal((ushort)0, memory.Read<ushort>(Size - 2));
    }

    [Fact]
    public void GuestMemory_NegativeLengthThrows()
    {
        using var memory = OneMiB();
        var e = Assert.Throws<GuestMemoryException>(() => memory.GetSpan(0x1000, -1));
        Assert.Equal(0x1000UL, e.Address);
        Assert.Equal(ulong.MaxValue, e.LengthBytes);
    }

    [Fact]
    public void GuestMemory_HugeLengthsAndAddressesThrowWithoutWrapping()
    {
        using var memory = OneMiB();
        Assert.Throws<GuestMemoryException>(() => memory.GetSpan(0, int.MaxValue));
        Assert.False(memory.IsRam(0, ulong.MaxValue));
        Assert.False(memory.IsRam(1, ulong.MaxValue));
        Assert.False(memory.IsRam(ulong.MaxValue, 2)); // address + length wraps to 1
        Assert.False(memory.IsRam(ulong.MaxValue, 1));
        var e = Assert.Throws<GuestMemoryException>(() => memory.Read<ushort>(ulong.MaxValue));
        Assert.Equal(ulong.MaxValue, e.Address);
    }

    [Fact]
    public void GuestMemory_AddressInMmioHoleOfLargeGuestThrows()
    {
        // 3.5 GiB: [0, 3 GiB) and [4 GiB, 4.5 GiB). MAP_NORESERVE, so only touched pages cost memory.
        using var memory = GuestMemory.Allocate(X86Layout.RamRanges(0xe000_0000));
        Assert.Equal(2, memory.Regions.Count);

        memory.Write<byte>(X86Layout.MmioHoleAddress - 1, 0x11);
        Assert.Equal((byte)0x11, memory.Read<byte>(X86Layout.MmioHoleAddress - 1));

        var inHole = Assert.Throws<GuestMemoryException>(() => memory.Read<byte>(X86Layout.MmioHoleAddress));
        Assert.Equal(X86Layout.MmioHoleAddress, inHole.Address);
        Assert.Throws<GuestMemoryException>(() => memory.Read<uint>(0xfee0_0000));
        Assert.Throws<GuestMemoryException>(() => memory.Read<byte>(X86Layout.FourGiB - 1));
        // Straddling the end of low RAM into the hole.
        Assert.Throws<GuestMemoryException>(() => memory.Read<ushort>(X86Layout.MmioHoleAddress - 1));
        Assert.False(memory.IsRam(X86Layout.MmioHoleAddress - 0x1000, 0x2000));

        memory.Write(X86Layout.FourGiB, 0x0123_4567_89ab_cdefUL);
        Assert.Equal(0x0123_4567_89ab_cdefUL, memory.Read<ulong>(X86Layout.FourGiB));
        memory.Write<byte>(0x1_1fff_ffff, 0x22);
        Assert.Equal((byte)0x22, memory.Read<byte>(0x1_1fff_ffff));
        Assert.Throws<GuestMemoryException>(() => memory.Read<byte>(0x1_2000_0000));

        // The two regions are distinct memory: the byte at 4 GiB is not the byte at 3 GiB.
        Assert.Equal((byte)0, memory.Read<byte>(0));
    }

    [Fact]
    public void GuestMemory_FillSetsExactlyTheRange()
    {
        using var memory = OneMiB();
        memory.Fill(0x2001, 0x1ffe, 0xcc);
        Assert.Equal((byte)0, memory.Read<byte>(0x2000));
        Assert.Equal((byte)0xcc, memory.Read<byte>(0x2001));
        Assert.Equal((byte)0xcc, memory.Read<byte>(0x3ffe));
        Assert.Equal((byte)0, memory.Read<byte>(0x3fff));
        var all = new byte[0x1ffe];
        memory.Read(0x2001, all);
        Assert.All(all, b => Assert.Equal(0xcc, b));
    }

    [Fact]
    public void GuestMemory_FillOfZeroBytesDoesNothingEvenOutsideRam()
    {
        using var memory = OneMiB();
        memory.Fill(Size * 4, 0, 0xff);
        memory.Fill(0, 0, 0xff);
        Assert.Equal((byte)0, memory.Read<byte>(0));
    }

    [Fact]
    public void GuestMemory_FillPastEndThrows()
    {
        using var memory = OneMiB();
        var e = Assert.Throws<GuestMemoryException>(() => memory.Fill(Size - 0x10, 0x11, 0xff));
        Assert.Equal(Size - 0x10, e.Address);
        Assert.Equal((byte)0, memory.Read<byte>(Size - 0x10));
    }

    [Fact]
    public void GuestMemory_AccessAfterDisposeIsAGuestMemoryException()
    {
        var memory = OneMiB();
        memory.Dispose();
        memory.Dispose(); // idempotent
        Assert.Contains("the VM has ended", Assert.Throws<GuestMemoryException>(() => memory.Read<byte>(0)).Message);
    }

    [Fact]
    public void GuestMemory_ALeaseKeepsRamMappedAfterTheOwnerDisposesIt()
    {
        var memory = OneMiB();
        memory.Write<ulong>(0x1000, 0x1234_5678);
        var lease = memory.Lease();
        memory.Dispose();

        // A migration or snapshot still reading when the VM ends reads RAM, not unmapped memory.
        Assert.Equal(0x1234_5678UL, memory.Read<ulong>(0x1000));
        lease.Dispose();
        lease.Dispose(); // idempotent: the owner's reference is not released twice
        Assert.Throws<GuestMemoryException>(() => memory.Read<ulong>(0x1000));
    }

    [Fact]
    public void GuestMemory_NoLeaseOnceTheOwnerDisposedIt()
    {
        var memory = OneMiB();
        using (memory.Lease()) { }
        memory.Dispose();
        Assert.Contains("the VM has ended", Assert.Throws<GuestMemoryException>(() => memory.Lease()).Message);
    }
}
