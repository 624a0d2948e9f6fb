using Vmm.Memory;
using Xunit;

namespace Vmm.Tests.Memory;

public sealed class MemorySizeTests
{
    [Theory]
    [InlineData("1048576", 1048576UL)]
    [InlineData("0", 0UL)]
    [InlineData("512B", 512UL)]
    [InlineData("64K", 64UL << 10)]
    [InlineData("64k", 64UL << 10)]
    [InlineData("64KB", 64UL << 10)]
    [InlineData("64KiB", 64UL << 10)]
    [InlineData("512M", 512UL << 20)]
    [InlineData("512MB", 512UL << 20)]
    [InlineData("512MiB", 512UL << 20)]
    [InlineData("512mib", 512UL << 20)]
    [InlineData("2G", 2UL << 30)]
    [InlineData("2GiB", 2UL << 30)]
    [InlineData("1T", 1UL << 40)]
    [InlineData("1TB", 1UL << 40)]
    public void MemorySize_ParsesNumberWithUnitAsPowersOf1024(string text, ulong expected)
    {
        Assert.True(MemorySize.TryParse(text, out ulong bytes, out string error));
        Assert.Equal(expected, bytes);
        Assert.Equal("", error);
    }

    [Theory]
    [InlineData("  2G  ")]
    [InlineData("\t2G\n")]
    public void MemorySize_IgnoresSurroundingWhitespace(string text)
    {
        Assert.True(MemorySize.TryParse(text, out ulong bytes, out _));
        Assert.Equal(2UL << 30, bytes);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("   ")]
    public void MemorySize_RejectsEmptyWithClearMessage(string? text)
    {
        Assert.False(MemorySize.TryParse(text, out ulong bytes, out string error));
        Assert.Equal(0UL, bytes);
        Assert.Equal("empty size", error);
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("G")]
    [InlineData("-1G")]
    [InlineData("+1G")]
    [InlineData("1.5G")]
    [InlineData("0x100")]
    public void MemorySize_RejectsGarbageNamingTheTextAndTheExpectedForm(string text)
    {
        Assert.False(MemorySize.TryParse(text, out ulong bytes, out string error));
        Assert.Equal(0UL, bytes);
        Assert.Contains($"'{text}'", error);
        Assert.True(error.Contains("is not a size", StringComparison.Ordinal) || error.Contains("unknown unit", StringComparison.Ordinal),
            $"unexpected message: {error}");
    }

    [Fact]
    public void MemorySize_RejectsNonNumberWithExample()
    {
        Assert.False(MemorySize.TryParse("lots", out _, out string error));
        Assert.Equal("'lots' is not a size: expected a number with an optional unit, like 512M or 2G", error);
    }

    [Theory]
    [InlineData("5X", "X")]
    [InlineData("5 G", " G")]
    [InlineData("5Gb!", "Gb!")]
    [InlineData("5P", "P")]
    [InlineData("5MiBs", "MiBs")]
    public void MemorySize_RejectsUnknownUnitNamingIt(string text, string unit)
    {
        Assert.False(MemorySize.TryParse(text, out ulong bytes, out string error));
        Assert.Equal(0UL, bytes);
        Assert.Contains($"unknown unit '{unit}'", error);
        Assert.Contains("K, M, G or T", error);
    }

    [Theory]
    [InlineData("18446744073709551616")]      // ulong.MaxValue + 1: the number itself overflows
    [InlineData("99999999999999999999999")]
    public void MemorySize_RejectsNumberThatDoesNotFitInUlong(string text)
    {
        Assert.False(MemorySize.TryParse(text, out ulong bytes, out string error));
        Assert.Equal(0UL, bytes);
        Assert.Contains($"'{text}'", error);
    }

    [Theory]
    [InlineData("16777216T")]   // 2^24 TiB = 2^64
    [InlineData("17179869184G")] // 2^34 GiB = 2^64
    [InlineData("18446744073709551615K")]
    public void MemorySize_RejectsValueThatOverflowsAfterScaling(string text)
    {
        Assert.False(MemorySize.TryParse(text, out ulong bytes, out string error));
        Assert.Equal(0UL, bytes);
        Assert.Equal($"'{text}' is too large", error);
    }

    [Fact]
    public void MemorySize_AcceptsLargestValueThatFitsAfterScaling()
    {
        Assert.True(MemorySize.TryParse("16777215T", out ulong bytes, out _));
        Assert.Equal(16777215UL << 40, bytes);
        Assert.True(MemorySize.TryParse("18446744073709551615", out bytes, out _));
        Assert.Equal(ulong.MaxValue, bytes);
    }
}
