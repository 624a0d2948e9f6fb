using Vmm.Arch;
using Xunit;

namespace Vmm.Tests.Arch;

public sealed class GdtEntryTests
{
    [Fact]
    public void GdtEntry_EncodesFlat64BitCode() => Assert.Equal(0x00af_9b00_0000_ffffUL, GdtEntry.Code64.Encode());

    [Fact]
    public void GdtEntry_EncodesFlat32BitCode() => Assert.Equal(0x00cf_9b00_0000_ffffUL, GdtEntry.Code32.Encode());

    [Fact]
    public void GdtEntry_EncodesFlatData() => Assert.Equal(0x00cf_9300_0000_ffffUL, GdtEntry.Data.Encode());

    [Fact]
    public void GdtEntry_EncodesTss() => Assert.Equal(0x008f_8b00_0000_ffffUL, GdtEntry.Tss.Encode());

    [Fact]
    public void GdtEntry_EncodesNullAsZero() => Assert.Equal(0UL, GdtEntry.Null.Encode());

    [Fact]
    public void GdtEntry_EncodesBaseAndLimitBitsInTheirSplitFields()
    {
        // base 0x12345678: 15:0 -> bits 31:16, 23:16 -> bits 39:32, 31:24 -> bits 63:56; limit 0xabcde: 15:0 -> 15:0, 19:16 -> 51:48.
        var entry = new GdtEntry(0x4093, 0x1234_5678, 0xa_bcde);
        Assert.Equal(0x124a_9334_5678_bcdeUL, entry.Encode());
    }

    [Fact]
    public void GdtEntry_BootTablePutsCodeAndDataAtBootProtocolSelectors()
    {
        var longTable = GdtEntry.BootTable(longMode: true);
        Assert.Equal(5, longTable.Length);
        Assert.Equal(GdtEntry.Null, longTable[0]);
        Assert.Equal(GdtEntry.Null, longTable[1]);
        Assert.Equal(GdtEntry.Code64, longTable[GdtEntry.CodeSelector / 8]);
        Assert.Equal(GdtEntry.Data, longTable[GdtEntry.DataSelector / 8]);
        Assert.Equal(GdtEntry.Tss, longTable[GdtEntry.TssSelector / 8]);
        Assert.Equal(GdtEntry.Code32, GdtEntry.BootTable(longMode: false)[2]);
        Assert.Equal((ushort)0x10, GdtEntry.CodeSelector);
        Assert.Equal((ushort)0x18, GdtEntry.DataSelector);
    }

    [Fact]
    public void GdtEntry_Code64SegmentIsLongModeWithScaledLimit()
    {
        var s = GdtEntry.Code64.ToKvmSegment(0x10);
        Assert.Equal(0UL, s.Base);
        Assert.Equal(0xffff_ffffu, s.Limit);
        Assert.Equal((ushort)0x10, s.Selector);
        Assert.Equal((byte)0xb, s.Type);
        Assert.Equal((byte)1, s.Present);
        Assert.Equal((byte)0, s.Dpl);
        Assert.Equal((byte)1, s.S);
        Assert.Equal((byte)1, s.L);
        Assert.Equal((byte)0, s.Db);
        Assert.Equal((byte)1, s.G);
        Assert.Equal((byte)0, s.Avl);
        Assert.Equal((byte)0, s.Unusable);
    }

    [Fact]
    public void GdtEntry_Code32SegmentIsDefaultSize32NotLong()
    {
        var s = GdtEntry.Code32.ToKvmSegment(0x10);
        Assert.Equal(0xffff_ffffu, s.Limit);
        Assert.Equal((byte)0xb, s.Type);
        Assert.Equal((byte)0, s.L);
        Assert.Equal((byte)1, s.Db);
        Assert.Equal((byte)1, s.G);
    }

    [Fact]
    public void GdtEntry_DataSegmentIsReadWriteAccessed()
    {
        var s = GdtEntry.Data.ToKvmSegment(0x18);
        Assert.Equal((ushort)0x18, s.Selector);
        Assert.Equal((byte)0x3, s.Type);
        Assert.Equal((byte)1, s.Present);
        Assert.Equal((byte)1, s.S);
        Assert.Equal((byte)1, s.Db);
        Assert.Equal((byte)0, s.L);
        Assert.Equal(0xffff_ffffu, s.Limit);
    }

    [Fact]
    public void GdtEntry_TssSegmentIsSystemBusyTss()
    {
        var s = GdtEntry.Tss.ToKvmSegment(0x20);
        Assert.Equal((byte)0xb, s.Type);
        Assert.Equal((byte)0, s.S);
        Assert.Equal((byte)1, s.Present);
        Assert.Equal((byte)1, s.G);
        Assert.Equal((byte)0, s.Db);
        Assert.Equal(0xffff_ffffu, s.Limit);
        Assert.Equal((byte)0, s.Unusable);
    }

    [Fact]
    public void GdtEntry_ByteGranularLimitIsNotScaled()
    {
        var s = new GdtEntry(0x0093, 0x1000, 0xffff).ToKvmSegment(0x28);
        Assert.Equal(0xffffu, s.Limit);
        Assert.Equal(0x1000UL, s.Base);
        Assert.Equal((byte)0, s.G);
    }

    [Fact]
    public void GdtEntry_NotPresentSegmentIsUnusable()
    {
        var s = GdtEntry.Null.ToKvmSegment(0);
        Assert.Equal((byte)0, s.Present);
        Assert.Equal((byte)1, s.Unusable);
    }

    [Fact]
    public void GdtEntry_DplAndAvlComeFromFlags()
    {
        var s = new GdtEntry(0x10f3, 0, 0).ToKvmSegment(0x33); // P, DPL 3, S, type 3, AVL
        Assert.Equal((byte)3, s.Dpl);
        Assert.Equal((byte)1, s.Avl);
        Assert.Equal((byte)3, s.Type);
    }
}
