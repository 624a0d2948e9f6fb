using Vmm.Devices.Virtio;
using Vmm.Kvm;
using Xunit;
using static Vmm.Devices.Virtio.VirtioNet;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>Which offloaded frames the TAP may hand over follows exactly what the driver accepted.</summary>
public sealed class VirtioNetOffloadTests
{
    [Theory]
    [InlineData(0UL, TapOffloads.None)]
    [InlineData(FeatureCsum | FeatureHostTso4 | FeatureHostTso6, TapOffloads.None)] // transmit offloads only
    [InlineData(FeatureGuestTso4, TapOffloads.None)] // TSO without checksum offload is not a thing
    [InlineData(FeatureGuestCsum, TapOffloads.Checksum)]
    [InlineData(FeatureGuestCsum | FeatureGuestTso4, TapOffloads.Checksum | TapOffloads.Tso4)]
    [InlineData(FeatureGuestCsum | FeatureGuestTso4 | FeatureGuestTso6, TapOffloads.Checksum | TapOffloads.Tso4 | TapOffloads.Tso6)]
    public void ReceiveOffloads_FollowTheGuestFeaturesTheDriverAccepted(ulong acknowledged, TapOffloads expected)
    {
        Assert.Equal(expected, ReceiveOffloads(acknowledged | VirtioFeatures.Version1));
    }

    [Fact]
    public void OffloadFeatures_AreTheChecksumAndTsoBitsOfTheSpec()
    {
        // VIRTIO_NET_F_CSUM 0, GUEST_CSUM 1, GUEST_TSO4 7, GUEST_TSO6 8, HOST_TSO4 11, HOST_TSO6 12.
        Assert.Equal((1UL << 0) | (1UL << 1) | (1UL << 7) | (1UL << 8) | (1UL << 11) | (1UL << 12), OffloadFeatures);
    }
}
