using System.Buffers.Binary;
using Vmm.Arch;
using Vmm.Boot;
using Xunit;

namespace Vmm.Tests.Boot;

public sealed class BootParamsTests
{
    private static uint U32(BootParams p, int offset) => BinaryPrimitives.ReadUInt32LittleEndian(p.Bytes[offset..]);
    private static ushort U16(BootParams p, int offset) => BinaryPrimitives.ReadUInt16LittleEndian(p.Bytes[offset..]);

    [Fact]
    public void BootParams_IsOnePage()
    {
        Assert.Equal(4096, BootParams.Synthesized(2048).Bytes.Length);
    }

    [Fact]
    public void BootParams_E820RoundTripsAndIsLaidOutAsTheKernelReadsIt()
    {
        var p = BootParams.Synthesized(2048);
        var map = E820Entry.MapFor(X86Layout.RamRanges(6UL << 30));
        p.SetE820(map);
        Assert.Equal(map, p.E820);
        Assert.Equal((byte)4, p.Bytes[0x1e8]); // e820_entries
        // Fourth entry of e820_table (0x2d0, 20 bytes each): RAM at 4 GiB.
        Assert.Equal(0x1_0000_0000UL, BinaryPrimitives.ReadUInt64LittleEndian(p.Bytes[(0x2d0 + 3 * 20)..]));
        Assert.Equal((6UL << 30) - 0xc000_0000, BinaryPrimitives.ReadUInt64LittleEndian(p.Bytes[(0x2d0 + 3 * 20 + 8)..]));
        Assert.Equal(1u, U32(p, 0x2d0 + 3 * 20 + 16));
        Assert.Equal(2u, U32(p, 0x2d0 + 1 * 20 + 16));
    }

    [Fact]
    public void BootParams_E820AcceptsMaximumAndRejectsMore()
    {
        var p = BootParams.Synthesized(2048);
        var max = Enumerable.Range(0, 128).Select(i => new E820Entry((ulong)i << 20, 1 << 20, E820Type.Ram)).ToList();
        p.SetE820(max);
        Assert.Equal(128, p.E820.Count);
        Assert.Equal(max[127], p.E820[127]);
        var tooMany = Enumerable.Range(0, 129).Select(i => new E820Entry((ulong)i << 20, 1 << 20, E820Type.Ram)).ToList();
        Assert.Throws<ArgumentException>(() => p.SetE820(tooMany));
        Assert.Equal(128, p.E820.Count);
    }

    [Fact]
    public void BootParams_EmptyMapByDefault()
    {
        Assert.Empty(BootParams.Synthesized(2048).E820);
    }

    [Fact]
    public void BootParams_InitrdLowAddressUsesOnlyLegacyFields()
    {
        var p = BootParams.Synthesized(2048);
        p.SetInitrd(0x3f00_0000, 0x12_3456);
        Assert.Equal(0x3f00_0000UL, p.InitrdAddress);
        Assert.Equal(0x12_3456UL, p.InitrdSizeBytes);
        Assert.Equal(0x3f00_0000u, U32(p, 0x218)); // ramdisk_image
        Assert.Equal(0x12_3456u, U32(p, 0x21c));   // ramdisk_size
        Assert.Equal(0u, U32(p, 0x0c0));           // ext_ramdisk_image
        Assert.Equal(0u, U32(p, 0x0c4));           // ext_ramdisk_size
    }

    [Fact]
    public void BootParams_InitrdHighBitsGoToExtFields()
    {
        var p = BootParams.Synthesized(2048);
        p.SetInitrd(0x0000_0002_8000_1000, 0x0000_0001_0000_0200);
        Assert.Equal(0x0000_0002_8000_1000UL, p.InitrdAddress);
        Assert.Equal(0x0000_0001_0000_0200UL, p.InitrdSizeBytes);
        Assert.Equal(0x8000_1000u, U32(p, 0x218));
        Assert.Equal(2u, U32(p, 0x0c0));
        Assert.Equal(0x200u, U32(p, 0x21c));
        Assert.Equal(1u, U32(p, 0x0c4));
    }

    [Fact]
    public void BootParams_CommandLineLowAndHighBits()
    {
        var p = BootParams.Synthesized(2048);
        p.SetCommandLine(X86Layout.CommandLineAddress);
        Assert.Equal(X86Layout.CommandLineAddress, p.CommandLineAddress);
        Assert.Equal(0x20000u, U32(p, 0x228)); // cmd_line_ptr
        Assert.Equal(0u, U32(p, 0x0c8));       // ext_cmd_line_ptr

        p.SetCommandLine(0x0000_0003_0000_4000);
        Assert.Equal(0x0000_0003_0000_4000UL, p.CommandLineAddress);
        Assert.Equal(0x4000u, U32(p, 0x228));
        Assert.Equal(3u, U32(p, 0x0c8));
    }

    [Fact]
    public void BootParams_SynthesizedHasTheFieldsTheKernelChecks()
    {
        var p = BootParams.Synthesized(2048);
        Assert.Equal((ushort)0xaa55, U16(p, 0x1fe));
        Assert.Equal(0x53726448u, U32(p, 0x202)); // "HdrS"
        Assert.Equal("HdrS"u8.ToArray(), p.Bytes.Slice(0x202, 4).ToArray());
        Assert.Equal((ushort)0x020f, U16(p, 0x206));
        Assert.Equal((byte)0xff, p.Bytes[0x210]);
        Assert.Equal((byte)0xff, p.TypeOfLoaderValue);
        Assert.Equal((byte)0x81, p.Bytes[0x211]); // LOADED_HIGH | CAN_USE_HEAP
        Assert.Equal((ushort)0xfe00, U16(p, 0x224)); // heap_end_ptr
        Assert.Equal(0x0100_0000u, U32(p, 0x230));   // kernel_alignment
        Assert.Equal(2048u, U32(p, 0x238));          // cmdline_size
    }

    [Fact]
    public void BootParams_FromSetupHeaderCopiesHeaderAt0x1f1AndSetsLoaderFields()
    {
        byte[] file = new BzImageBuilder { LoadFlags = 0x01, InitrdAddressMax = 0x37ff_ffff }.Build();
        var header = BzImageHeader.Parse(file, file.Length, "bzImage");
        var p = BootParams.FromSetupHeader(header.SetupHeaderBytes, 0x200_0000);

        var changed = new HashSet<int> { 0x210, 0x211, 0x214, 0x215, 0x216, 0x217, 0x224, 0x225 };
        for (int i = 0; i < header.SetupHeaderBytes.Length; i++)
        {
            int offset = 0x1f1 + i;
            if (!changed.Contains(offset)) Assert.True(header.SetupHeaderBytes[i] == p.Bytes[offset], $"byte 0x{offset:x} differs");
        }
        Assert.Equal(0x37ff_ffffu, U32(p, 0x22c));
        Assert.Equal((byte)0xff, p.TypeOfLoaderValue);
        Assert.Equal((byte)0x81, p.Bytes[0x211]);     // the header's LOADED_HIGH kept, CAN_USE_HEAP added
        Assert.Equal(0x200_0000u, U32(p, 0x214));     // code32_start: where the kernel was put
        Assert.Equal((ushort)0xfe00, U16(p, 0x224));
        // Outside the header the page is zero (e.g. the e820 count and screen_info).
        Assert.Equal((byte)0, p.Bytes[0x1e8]);
        Assert.All(p.Bytes[..0x1f1].ToArray(), b => Assert.Equal(0, b));
        Assert.All(p.Bytes[(0x1f1 + header.SetupHeaderBytes.Length)..].ToArray(), b => Assert.Equal(0, b));
    }
}
