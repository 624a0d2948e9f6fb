using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Vm;

public sealed class VmNameTests
{
    [Theory]
    [InlineData("web-1")]
    [InlineData("db.primary_2")]
    [InlineData("A")]
    public void Names_OfLettersDigitsDotsUnderscoresAndDashes_AreValid(string name) => Assert.True(VmName.IsValid(name));

    [Theory]
    [InlineData("")]
    [InlineData(".hidden")]
    [InlineData("-x")]
    [InlineData("a/b")]
    [InlineData("../etc")]
    [InlineData("a b")]
    [InlineData("a\0b")]
    [InlineData("ä")]
    public void Names_ThatCannotSafelyBeAFileName_AreNot(string name) => Assert.False(VmName.IsValid(name));

    [Fact]
    public void ANameOfMoreThan64Characters_IsNot() => Assert.False(VmName.IsValid(new string('a', 65)));

    [Theory]
    [InlineData("/boot/vmlinuz-6.1.0", "vmlinuz-6.1")]
    [InlineData("/srv/snapshots/nightly/", "nightly")]
    [InlineData("/tmp/my kernel!.elf", "my-kernel-")]
    [InlineData("/tmp/.elf", "vm")]
    [InlineData(null, "vm")]
    public void Derive_TakesTheFileNameAndAddsAShortSuffix(string? path, string stem)
    {
        string name = VmName.Derive(path);
        Assert.True(VmName.IsValid(name), name);
        Assert.Matches($"^{System.Text.RegularExpressions.Regex.Escape(stem)}-[0-9a-f]{{6}}$", name);
        Assert.NotEqual(name, VmName.Derive(path));
    }

    [Fact]
    public void Expand_PutsTheNameInAPathTemplate() =>
        Assert.Equal("/run/vmm/web-1.sock", VmName.Expand("/run/vmm/{name}.sock", "web-1"));
}
