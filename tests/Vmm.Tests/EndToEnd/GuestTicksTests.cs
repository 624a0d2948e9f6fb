using Xunit;
using Xunit.Sdk;

namespace Vmm.Tests.EndToEnd;

/// <summary>The host's reading of guest-images/ticks.c: the Linux tests rely on it to see a lost or repeated tick, so
/// it must see one. The chain values below are what ticks.c prints (1, then chain * 1000003 ^ tick).</summary>
public sealed class GuestTicksTests
{
    private const string One = "VMM-TICK 1 00000001\n", Two = "VMM-TICK 2 000f4241\n", Three = "VMM-TICK 3 d4e21900\n";

    [Fact]
    public void TicksSplitOverConsoles_CountAsOneRun() =>
        Assert.Equal(3, GuestTicks.AssertCounted("test", "[ 1.0] boot\n" + One, Two + "other output\n", Three));

    [Fact]
    public void ARepeatedTick_IsSeen() => Assert.Throws<TrueException>(() => GuestTicks.AssertCounted("test", One + Two, Two + Three));

    [Fact]
    public void ALostTick_IsSeen() => Assert.Throws<TrueException>(() => GuestTicks.AssertCounted("test", One, Three));

    [Fact]
    public void AWrongChain_IsSeen() => Assert.Throws<TrueException>(() => GuestTicks.AssertCounted("test", One + "VMM-TICK 2 000f4242\n"));

    [Fact]
    public void NoTicks_IsSeen() => Assert.Throws<TrueException>(() => GuestTicks.AssertCounted("test", "nothing\n"));

    [Fact]
    public void Done_MustNameTheLastTickAndItsChain()
    {
        GuestTicks.AssertDone("VMM-TICKS-DONE 3 d4e21900\n", 3);
        Assert.ThrowsAny<XunitException>(() => GuestTicks.AssertDone("VMM-TICKS-DONE 3 d4e21900\n", 2));
        Assert.ThrowsAny<XunitException>(() => GuestTicks.AssertDone("no done line\n", 3));
    }
}
