using Vmm.Arch;
using Vmm.Kvm.Interop;
using Xunit;

namespace Vmm.Tests.Arch;

public sealed class CpuidPolicyTests
{
    private static KvmCpuidEntry2 Leaf(uint function, uint index = 0, uint eax = 0, uint ebx = 0, uint ecx = 0, uint edx = 0) =>
        new() { Function = function, Index = index, Eax = eax, Ebx = ebx, Ecx = ecx, Edx = edx };

    private static KvmCpuidEntry2[] Supported() =>
    [
        Leaf(0, eax: 0x1f, ebx: 0x756e_6547),
        // Host: APIC ID 0x3c, 0x40 logical CPUs, CLFLUSH 8 (x8 bytes), brand 0x01; ECX without hypervisor bit; HTT set.
        Leaf(1, eax: 0x000a_0671, ebx: 0x3c40_0801, ecx: 0x7ffa_fbff, edx: 0xbfeb_fbff),
        Leaf(4, 0, eax: 0x1c00_4121), // L1d: level 1 in bits 7:5, type 1
        Leaf(4, 3, eax: 0x3c07_c163), // L3: level 3
        Leaf(0xb, 0, eax: 1, ebx: 2, ecx: 0x100, edx: 0x3c),
        Leaf(0xb, 1, eax: 6, ebx: 0x40, ecx: 0x201, edx: 0x3c),
        Leaf(0xb, 2, eax: 0, ebx: 0, ecx: 0x002, edx: 0x3c),
        Leaf(0x1f, 1, eax: 6, ebx: 0x40, ecx: 0x201, edx: 0x3c),
        Leaf(0x8000_0000, eax: 0x8000_0008, ebx: 0x1234),
    ];

    private static KvmCpuidEntry2 Find(KvmCpuidEntry2[] entries, uint function, uint index = 0) =>
        Assert.Single(entries, e => e.Function == function && e.Index == index);

    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 4)]
    [InlineData(5, 8)]
    public void CpuidPolicy_Leaf1CarriesApicIdAndLogicalCountKeepingClflush(int index, int count)
    {
        var result = CpuidPolicy.ForVcpu(Supported(), index, count);
        var leaf1 = Find(result, 1);
        Assert.Equal((uint)index, leaf1.Ebx >> 24);
        Assert.Equal((uint)count, (leaf1.Ebx >> 16) & 0xff);
        Assert.Equal(0x0801u, leaf1.Ebx & 0xffff);
        Assert.Equal(0x000a_0671u, leaf1.Eax);
    }

    [Fact]
    public void CpuidPolicy_Leaf1SetsHypervisorBitKeepingOtherFeatures()
    {
        var leaf1 = Find(CpuidPolicy.ForVcpu(Supported(), 0, 1), 1);
        Assert.Equal(0x8000_0000u, leaf1.Ecx & 0x8000_0000u);
        Assert.Equal(0x7ffa_fbffu, leaf1.Ecx & 0x7fff_ffffu);
    }

    [Fact]
    public void CpuidPolicy_HttFollowsVcpuCount()
    {
        Assert.Equal(0u, Find(CpuidPolicy.ForVcpu(Supported(), 0, 1), 1).Edx & (1u << 28));
        Assert.Equal(1u << 28, Find(CpuidPolicy.ForVcpu(Supported(), 0, 2), 1).Edx & (1u << 28));
        Assert.Equal(0xafeb_fbffu, Find(CpuidPolicy.ForVcpu(Supported(), 0, 1), 1).Edx);
    }

    [Theory]
    [InlineData(0, 1, 0)]
    [InlineData(3, 4, 2)]
    [InlineData(4, 5, 3)]
    [InlineData(7, 8, 3)]
    [InlineData(8, 9, 4)]
    public void CpuidPolicy_Leaf0BGivesX2ApicIdAndTopologyLevels(int index, int count, int coreBits)
    {
        var result = CpuidPolicy.ForVcpu(Supported(), index, count);

        var smt = Find(result, 0xb, 0);
        Assert.Equal((uint)index, smt.Edx);
        Assert.Equal(0u, smt.Eax);          // one thread per core: no bits to shift
        Assert.Equal(1u, smt.Ebx);          // one logical processor at this level
        Assert.Equal(0x100u, smt.Ecx);      // level 0, type SMT

        var core = Find(result, 0xb, 1);
        Assert.Equal((uint)index, core.Edx);
        Assert.Equal((uint)coreBits, core.Eax);
        Assert.Equal((uint)count, core.Ebx);
        Assert.Equal(0x201u, core.Ecx);     // level 1, type core

        var invalid = Find(result, 0xb, 2);
        Assert.Equal((uint)index, invalid.Edx);
        Assert.Equal(0u, invalid.Eax);
        Assert.Equal(0u, invalid.Ebx);
        Assert.Equal(2u, invalid.Ecx);      // level number only, type 0 = invalid
    }

    [Fact]
    public void CpuidPolicy_Leaf1FIsRewrittenLikeLeaf0B()
    {
        var leaf = Find(CpuidPolicy.ForVcpu(Supported(), 2, 4), 0x1f, 1);
        Assert.Equal(2u, leaf.Edx);
        Assert.Equal(2u, leaf.Eax);
        Assert.Equal(4u, leaf.Ebx);
        Assert.Equal(0x201u, leaf.Ecx);
    }

    [Fact]
    public void CpuidPolicy_Leaf4DescribesCoresPerPackageAndCacheSharing()
    {
        var result = CpuidPolicy.ForVcpu(Supported(), 0, 4);
        var l1 = Find(result, 4, 0);
        Assert.Equal(3u, l1.Eax >> 26);
        Assert.Equal(0u, (l1.Eax >> 14) & 0xfff);
        Assert.Equal(0x0121u, l1.Eax & 0x3fff);
        var l3 = Find(result, 4, 3);
        Assert.Equal(3u, l3.Eax >> 26);
        Assert.Equal(3u, (l3.Eax >> 14) & 0xfff);
        Assert.Equal(0x0163u, l3.Eax & 0x3fff);
    }

    [Fact]
    public void CpuidPolicy_OtherLeavesAreCopiedUnchangedAndInputIsNotModified()
    {
        var supported = Supported();
        var result = CpuidPolicy.ForVcpu(supported, 1, 2);
        Assert.Equal(supported.Length, result.Length);
        Assert.Equal(Find(supported, 0), Find(result, 0));
        Assert.Equal(Find(supported, 0x8000_0000), Find(result, 0x8000_0000));
        Assert.Equal(0x3c40_0801u, Find(supported, 1).Ebx);
        Assert.Equal(0x3cu, Find(supported, 0xb, 0).Edx);
        Assert.NotSame(supported, result);
    }

    [Fact]
    public void CpuidPolicy_DifferentVcpusGetDifferentApicIds()
    {
        var supported = Supported();
        var ids = Enumerable.Range(0, 4).Select(i => Find(CpuidPolicy.ForVcpu(supported, i, 4), 1).Ebx >> 24).ToArray();
        Assert.Equal([0u, 1u, 2u, 3u], ids);
    }
}
