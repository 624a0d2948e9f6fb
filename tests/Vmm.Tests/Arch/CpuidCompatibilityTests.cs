using CsCheck;
using Vmm.Arch;
using Vmm.Kvm.Interop;
using Xunit;

namespace Vmm.Tests.Arch;

/// <summary>A guest may move only where every feature it was shown is offered again: what is refused, what is
/// not compared, and that any table, however hostile, gets an answer rather than an exception.</summary>
public sealed class CpuidCompatibilityTests
{
    private const uint SignificantIndex = 1;
    // "AuthenticAMD" and "GenuineIntel" as leaf 0 holds them: EBX, EDX, ECX.
    private static readonly (uint Ebx, uint Edx, uint Ecx) Amd = (0x6874_7541, 0x6974_6e65, 0x444d_4163);
    private static readonly (uint Ebx, uint Edx, uint Ecx) Intel = (0x756e_6547, 0x4965_6e69, 0x6c65_746e);

    private static KvmCpuidEntry2 Leaf(uint function, uint index = 0, uint eax = 0, uint ebx = 0, uint ecx = 0, uint edx = 0, uint flags = 0) =>
        new() { Function = function, Index = index, Flags = flags, Eax = eax, Ebx = ebx, Ecx = ecx, Edx = edx };

    /// <summary>A small AMD host: leaf 1 with sse4_2 and x2apic, leaf 7 with avx2, XSAVE of x87/SSE/AVX, lm, 48-bit addresses.</summary>
    private static KvmCpuidEntry2[] Host((uint Ebx, uint Edx, uint Ecx) vendor) =>
    [
        Leaf(0, eax: 0xd, ebx: vendor.Ebx, ecx: vendor.Ecx, edx: vendor.Edx),
        Leaf(1, eax: 0x00b0_0f21, ebx: 0x0002_0800, ecx: 1u << 20 | 1u << 21, edx: 0x078b_fbff),
        Leaf(7, 0, eax: 1, ebx: 1u << 5, flags: SignificantIndex),
        Leaf(7, 1, flags: SignificantIndex),
        Leaf(0xd, 0, eax: 0x7, ebx: 0x340, ecx: 0x340, flags: SignificantIndex),
        Leaf(0xd, 1, eax: 0x1, flags: SignificantIndex),
        Leaf(0x8000_0001, ecx: 1u << 0, edx: 1u << 29),
        Leaf(0x8000_0008, eax: 0x3030),
    ];

    private static KvmCpuidEntry2[] With(KvmCpuidEntry2[] table, uint function, uint index, Func<KvmCpuidEntry2, KvmCpuidEntry2> change) =>
        table.Select(e => e.Function == function && e.Index == index ? change(e) : e).ToArray();

    [Fact]
    public void TheSameTable_IsCompatible()
    {
        Assert.Empty(CpuidCompatibility.MissingFeatures(Host(Amd), Host(Amd)));
        Assert.Null(CpuidCompatibility.Refusal(Host(Amd), Host(Amd)));
    }

    [Fact]
    public void AFeatureTheHostLacks_IsRefusedByNameAndPlace()
    {
        var shown = With(Host(Amd), 7, 0, e => e with { Ebx = e.Ebx | 1u << 16 });

        Assert.Equal([new CpuidFeatureBit(7, 0, CpuidRegister.Ebx, 16)], CpuidCompatibility.MissingFeatures(shown, Host(Amd)));
        Assert.Equal("avx512f (CPUID 0x7.0 EBX bit 16)", CpuidCompatibility.Refusal(shown, Host(Amd)));
    }

    [Fact]
    public void FeaturesOfEveryComparedRegister_AreRefused()
    {
        var shown = With(Host(Amd), 1, 0, e => e with { Ecx = e.Ecx | 1u << 28 });           // avx
        shown = With(shown, 0xd, 0, e => e with { Eax = e.Eax | 1u << 5 });                  // AVX-512 opmask state
        shown = With(shown, 0xd, 1, e => e with { Eax = e.Eax | 1u << 3 });                  // xsaves
        shown = With(shown, 0x8000_0001, 0, e => e with { Ecx = e.Ecx | 1u << 11 });         // xop

        Assert.Equal(["avx", "xstate:opmask", "xsaves", "xop"], CpuidCompatibility.MissingFeatures(shown, Host(Amd)).Select(f => f.Name));
    }

    [Fact]
    public void ExtraFeaturesOnOffer_AreFine()
    {
        var offered = With(Host(Amd), 7, 0, e => e with { Ebx = ~0u, Ecx = ~0u, Edx = ~0u });
        offered = With(offered, 1, 0, e => e with { Ecx = ~0u, Edx = ~0u });

        Assert.Null(CpuidCompatibility.Refusal(Host(Amd), offered));
    }

    [Fact]
    public void BitsVmmOrTheGuestSets_AreNotCompared()
    {
        // hypervisor and HTT are vmm's; OSXSAVE and OSPKE follow the guest's CR4.
        var shown = With(Host(Amd), 1, 0, e => e with { Ecx = e.Ecx | 1u << 31 | 1u << 27, Edx = e.Edx | 1u << 28 });
        shown = With(shown, 7, 0, e => e with { Ecx = e.Ecx | 1u << 4 });

        Assert.Null(CpuidCompatibility.Refusal(shown, Host(Amd)));
    }

    [Fact]
    public void WhatDescribesRatherThanOffers_IsNotCompared()
    {
        // Another model and stepping, APIC ID and CPU count, XSAVE sizes, a cache leaf, another brand string.
        var shown = With(Host(Amd), 1, 0, e => e with { Eax = 0x00a0_0f11, Ebx = 0x0508_0800 });
        shown = With(shown, 0xd, 0, e => e with { Ebx = 0x988, Ecx = 0x988 });
        shown = [.. shown, Leaf(4, 0, eax: 0x1c00_4121, flags: SignificantIndex), Leaf(0x8000_0002, eax: 0x2044_4d41)];

        Assert.Null(CpuidCompatibility.Refusal(shown, Host(Amd)));
    }

    [Fact]
    public void AnotherVendor_IsRefused()
    {
        string? refusal = CpuidCompatibility.Refusal(Host(Intel), Host(Amd));

        Assert.Equal("a GenuineIntel CPU (this host's is AuthenticAMD)", refusal);
    }

    [Fact]
    public void FewerPhysicalAddressBits_AreRefused_AndMoreAreFine()
    {
        var wide = With(Host(Amd), 0x8000_0008, 0, e => e with { Eax = 0x302e });
        var narrow = With(Host(Amd), 0x8000_0008, 0, e => e with { Eax = 0x3027 });

        Assert.Equal("46-bit physical addresses (this host offers 39)", CpuidCompatibility.Refusal(wide, narrow));
        Assert.Null(CpuidCompatibility.Refusal(narrow, wide));
    }

    [Fact]
    public void ALeafTheHostLacks_OffersNothing()
    {
        var shown = With(Host(Amd), 7, 1, e => e with { Eax = 1u << 5 });
        var offered = Host(Amd).Where(e => !(e.Function == 7 && e.Index == 1)).ToArray();

        Assert.Equal("avx512_bf16 (CPUID 0x7.1 EAX bit 5)", CpuidCompatibility.Refusal(shown, offered));
    }

    [Fact]
    public void Subleaves_AreMatchedAsKvmMatchesThem()
    {
        // With the significant-index flag an entry is for its subleaf only: 7.0's avx2 says nothing of 7.1.
        var shown = With(Host(Amd), 7, 1, e => e with { Ebx = 1u << 5 });
        Assert.Equal([new CpuidFeatureBit(7, 1, CpuidRegister.Ebx, 5)], CpuidCompatibility.MissingFeatures(shown, Host(Amd)));
        // Without it the entry answers every subleaf.
        var unindexed = Host(Amd).Where(e => e.Function != 7).Append(Leaf(7, 0, ebx: ~0u)).ToArray();
        Assert.Null(CpuidCompatibility.Refusal(shown, unindexed));
    }

    [Fact]
    public void ABitWithoutAName_IsNamedByItsPlace() =>
        Assert.Equal("CPUID 0x80000021.0 EAX bit 3",
            CpuidCompatibility.Refusal([.. Host(Amd), Leaf(0x8000_0021, eax: 1u << 3)], Host(Amd)));

    [Fact]
    public void AGuestShownEverything_IsRefusedWithABoundedMessage()
    {
        var everything = Host(Amd).Select(e => e with { Eax = ~0u, Ebx = ~0u, Ecx = ~0u, Edx = ~0u }).ToArray();

        string refusal = CpuidCompatibility.Refusal(everything, [])!;

        Assert.StartsWith("a ???????????? CPU (this host's is nameless), 255-bit physical addresses (this host offers 0), ", refusal);
        Assert.EndsWith(" more features", refusal);
        Assert.True(refusal.Length < 1500, refusal);
    }

    [Fact]
    public void AnyPairOfTables_GetsAnAnswer_AndATableIsCompatibleWithItselfAndWithMore()
    {
        var entry = Gen.Select(Gen.UInt[0, 0x20].Select(f => f > 0x1c ? 0x8000_0000 + f - 0x1c : f), Gen.UInt[0, 3], Gen.UInt[0, 1], Gen.UInt, Gen.UInt, Gen.UInt, Gen.UInt)
            .Select((function, index, flags, eax, ebx, ecx, edx) => Leaf(function, index, eax, ebx, ecx, edx, flags));
        Gen.Select(entry.Array[0, 40], entry.Array[0, 40]).Sample((shown, offered) =>
        {
            Assert.True((CpuidCompatibility.Refusal(shown, offered)?.Length ?? 0) < 1500);
            Assert.Null(CpuidCompatibility.Refusal(shown, shown));
            Assert.Empty(CpuidCompatibility.MissingFeatures(shown, [.. shown.Select(e => e with { Eax = ~0u, Ebx = ~0u, Ecx = ~0u, Edx = ~0u })]));
        }, iter: 300);
    }

    [Fact]
    public void FeatureNames_CoverTheirRegistersBitForBit()
    {
        // A name table one entry short would shift every later name onto the wrong bit.
        Assert.Equal("avx512vl", new CpuidFeatureBit(7, 0, CpuidRegister.Ebx, 31).Name);
        Assert.Equal("hypervisor", new CpuidFeatureBit(1, 0, CpuidRegister.Ecx, 31).Name);
        Assert.Equal("pbe", new CpuidFeatureBit(1, 0, CpuidRegister.Edx, 31).Name);
        Assert.Equal("pks", new CpuidFeatureBit(7, 0, CpuidRegister.Ecx, 31).Name);
        Assert.Equal("spec_ctrl_ssbd", new CpuidFeatureBit(7, 0, CpuidRegister.Edx, 31).Name);
        Assert.Equal("3dnow", new CpuidFeatureBit(0x8000_0001, 0, CpuidRegister.Edx, 31).Name);
        Assert.Equal("mwaitx", new CpuidFeatureBit(0x8000_0001, 0, CpuidRegister.Ecx, 29).Name);
        Assert.Equal("brs", new CpuidFeatureBit(0x8000_0008, 0, CpuidRegister.Ebx, 31).Name);
        Assert.Equal("kvmclock_stable", new CpuidFeatureBit(0x4000_0001, 0, CpuidRegister.Eax, 24).Name);
        Assert.Equal("xstate:xtiledata", new CpuidFeatureBit(0xd, 0, CpuidRegister.Eax, 18).Name);
        Assert.Equal("lam", new CpuidFeatureBit(7, 1, CpuidRegister.Eax, 26).Name);
        Assert.Null(new CpuidFeatureBit(7, 1, CpuidRegister.Eax, 31).Name);
    }
}
