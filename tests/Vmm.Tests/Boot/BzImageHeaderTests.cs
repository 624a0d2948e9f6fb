using Vmm.Boot;
using Xunit;

namespace Vmm.Tests.Boot;

public sealed class BzImageHeaderTests
{
    private const string Path = "/images/bzImage";

    private static BzImageHeader Parse(byte[] file) => BzImageHeader.Parse(file, file.Length, Path);

    private static BootException Rejects(byte[] file) => Assert.Throws<BootException>(() => Parse(file));

    [Fact]
    public void BzImageHeader_ParsesValidHeader()
    {
        var builder = new BzImageBuilder
        {
            Version = 0x020f,
            SetupSectors = 27,
            InitrdAddressMax = 0x37ff_ffff,
            CommandLineSize = 0x7ff,
            PreferredAddress = 0x100_0000,
            InitSize = 0x1a4_c000,
        };
        var header = Parse(builder.Build());
        Assert.Equal((ushort)0x020f, header.ProtocolVersion);
        Assert.Equal(27, header.SetupSectors);
        Assert.Equal(28 * 512L, header.ProtectedModeOffset);
        Assert.True(header.Relocatable);
        Assert.True(header.Has64BitEntry);
        Assert.Equal(0x37ff_ffffu, header.InitrdAddressMax);
        Assert.Equal(0x7ffu, header.CommandLineMaxBytes);
        Assert.Equal(0x100_0000UL, header.PreferredLoadAddress);
        Assert.Equal(0x1a4_c000u, header.InitSizeBytes);
    }

    [Fact]
    public void BzImageHeader_CopiesSetupHeaderFrom0x1f1ToItsDeclaredEnd()
    {
        byte[] file = new BzImageBuilder { HeaderLength = 0x6a }.Build();
        var header = Parse(file);
        Assert.Equal(0x202 + 0x6a - 0x1f1, header.SetupHeaderBytes.Length);
        Assert.Equal(file[0x1f1..(0x202 + 0x6a)], header.SetupHeaderBytes);
    }

    [Fact]
    public void BzImageHeader_NotRelocatableWhenFlagClear()
    {
        Assert.False(Parse(new BzImageBuilder { Relocatable = 0 }.Build()).Relocatable);
    }

    [Fact]
    public void BzImageHeader_SetupSectorsZeroMeansFour()
    {
        var header = Parse(new BzImageBuilder { SetupSectors = 0 }.Build());
        Assert.Equal(4, header.SetupSectors);
        Assert.Equal(5 * 512L, header.ProtectedModeOffset);
    }

    [Theory]
    [InlineData((ushort)0x020c, (ushort)0x0001, true)]
    [InlineData((ushort)0x020f, (ushort)0x0003, true)]
    [InlineData((ushort)0x020b, (ushort)0x0001, false)] // XLF_KERNEL_64 only means something from 2.12
    [InlineData((ushort)0x020a, (ushort)0x0001, false)]
    [InlineData((ushort)0x020f, (ushort)0x0000, false)]
    [InlineData((ushort)0x020f, (ushort)0x0002, false)] // XLF_CAN_BE_LOADED_ABOVE_4G alone
    public void BzImageHeader_Has64BitEntryOnlyFromProtocol212WithXlfKernel64(ushort version, ushort xloadflags, bool expected)
    {
        Assert.Equal(expected, Parse(new BzImageBuilder { Version = version, XLoadFlags = xloadflags }.Build()).Has64BitEntry);
    }

    [Fact]
    public void BzImageHeader_AcceptsOldestSupportedProtocol210()
    {
        Assert.Equal((ushort)0x020a, Parse(new BzImageBuilder { Version = 0x020a }.Build()).ProtocolVersion);
    }

    [Theory]
    [InlineData((ushort)0x0209, "2.09")]
    [InlineData((ushort)0x0204, "2.04")]
    [InlineData((ushort)0x0100, "1.00")]
    public void BzImageHeader_RejectsProtocolOlderThan210(ushort version, string shown)
    {
        var e = Rejects(new BzImageBuilder { Version = version }.Build());
        Assert.StartsWith(Path + ":", e.Message);
        Assert.Contains($"boot protocol {shown} is older than 2.10", e.Message);
    }

    [Fact]
    public void BzImageHeader_RejectsZImageLoadedLow()
    {
        var e = Rejects(new BzImageBuilder { LoadFlags = 0x80 }.Build());
        Assert.Contains(Path, e.Message);
        Assert.Contains("zImage", e.Message);
    }

    [Fact]
    public void BzImageHeader_RejectsSetupSectorsPastEndOfFile()
    {
        // setup_sects = 10 means the kernel starts at 11 * 512, but the file ends before that.
        byte[] file = new BzImageBuilder { SetupSectors = 10 }.Build()[..(6 * 512)];
        var e = Rejects(file);
        Assert.Contains(Path, e.Message);
        Assert.Contains("10 sectors", e.Message);
        Assert.Contains($"{6 * 512} bytes", e.Message);
    }

    [Fact]
    public void BzImageHeader_RejectsFileWithSetupButNoKernel()
    {
        var builder = new BzImageBuilder { SetupSectors = 4, Payload = [] };
        var e = Rejects(builder.Build());
        Assert.Contains("4 sectors", e.Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4096)]
    [InlineData(8191)]
    public void BzImageHeader_RejectsAKernelCutShorterThanItsSysSize(int keptPayloadBytes)
    {
        var builder = new BzImageBuilder();
        byte[] file = builder.Build()[..(builder.ProtectedModeOffset + keptPayloadBytes)];
        var e = Rejects(file);
        Assert.Contains("is truncated", e.Message);
        Assert.Contains($"the file holds {keptPayloadBytes}", e.Message);
    }

    [Fact]
    public void BzImageHeader_AcceptsAKernelFollowedByMoreThanItsSysSize()
    {
        // Signed images and some build tools append data after the kernel.
        var builder = new BzImageBuilder { SysSize = 100 };
        byte[] file = builder.Build();
        Assert.Equal(4, BzImageHeader.Parse(file, file.Length, Path).SetupSectors);
    }

    [Fact]
    public void BzImageHeader_UsesGivenFileLengthNotSpanLength()
    {
        byte[] file = new BzImageBuilder { SetupSectors = 4, Payload = [] }.Build();
        Assert.Equal(4, BzImageHeader.Parse(file, file.Length + 100, Path).SetupSectors);
    }

    [Theory]
    [InlineData((byte)0x00)]
    [InlineData((byte)0x65)] // header ends at 0x267, before pref_address/init_size
    public void BzImageHeader_RejectsHeaderLengthTooShort(byte length)
    {
        var e = Rejects(new BzImageBuilder { HeaderLength = length }.Build());
        Assert.Contains($"setup header length byte (0x{length:x2}) is invalid", e.Message);
    }

    [Fact]
    public void BzImageHeader_AcceptsShortestHeaderThatReachesInitSize()
    {
        var header = Parse(new BzImageBuilder { HeaderLength = 0x66 }.Build());
        Assert.Equal(0x268 - 0x1f1, header.SetupHeaderBytes.Length);
    }

    [Fact]
    public void BzImageHeader_RejectsHeaderLengthPastTheBytesRead()
    {
        byte[] file = new BzImageBuilder { HeaderLength = 0xff }.Build();
        var e = Assert.Throws<BootException>(() => BzImageHeader.Parse(file.AsSpan(0, 0x280), file.Length, Path));
        Assert.Contains("(0xff) is invalid", e.Message);
    }

    [Fact]
    public void BzImageHeader_RejectsTruncatedHeader()
    {
        byte[] file = new BzImageBuilder().Build();
        var e = Assert.Throws<BootException>(() => BzImageHeader.Parse(file.AsSpan(0, 0x240), file.Length, Path));
        Assert.Equal($"{Path}: truncated setup header", e.Message);
    }

    [Fact]
    public void BzImageHeader_RejectsMissingMagic()
    {
        byte[] noBootFlag = new BzImageBuilder().Build();
        noBootFlag[0x1fe] = 0;
        Assert.Contains("no Linux setup header", Rejects(noBootFlag).Message);
        byte[] noHdrS = new BzImageBuilder().Build();
        noHdrS[0x205] = (byte)'s';
        Assert.Contains("'HdrS'", Rejects(noHdrS).Message);
    }

    [Fact]
    public void BzImageHeader_LooksLikeBzImageNeedsBootFlagAndHdrS()
    {
        byte[] file = new BzImageBuilder().Build();
        Assert.True(BzImageHeader.LooksLikeBzImage(file));
        Assert.False(BzImageHeader.LooksLikeBzImage(file.AsSpan(0, 0x205)));
        Assert.False(BzImageHeader.LooksLikeBzImage(new byte[4096]));
        Assert.False(BzImageHeader.LooksLikeBzImage(new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F' }));
    }
}
