using Vmm.Devices.Virtio;
using Xunit;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>The <c>--disk</c> and <c>--net</c> option parsers: what they accept, and the message for what they do not.</summary>
public sealed class DeviceConfigParsingTests
{
    [Theory]
    [InlineData("disk.img", "disk.img", false, null)]
    [InlineData("/images/root.img,ro", "/images/root.img", true, null)]
    [InlineData("root.img,id=rootfs", "root.img", false, "rootfs")]
    [InlineData("root.img,id=rootfs,ro", "root.img", true, "rootfs")]
    [InlineData("root.img,ro,id=exactly-twenty-bytes", "root.img", true, "exactly-twenty-bytes")]
    public void BlockDiskConfig_TryParse_AcceptsPathReadOnlyAndId(string text, string path, bool readOnly, string? id)
    {
        Assert.True(BlockDiskConfig.TryParse(text, out var disk, out string error), error);
        Assert.Equal(new BlockDiskConfig(path, readOnly, id), disk);
        Assert.Equal("", error);
    }

    [Theory]
    [InlineData("", "the image path is missing")]
    [InlineData(",ro", "the image path is missing")]
    [InlineData("disk.img,rw", "unknown option 'rw'")]
    [InlineData("disk.img,ro=1", "unknown option 'ro=1'")]
    [InlineData("disk.img,id=", "unknown option 'id='")]
    [InlineData("disk.img,id=twenty-one-bytes-long", "id 'twenty-one-bytes-long' is longer than 20 bytes")]
    [InlineData("disk.img,id=ééééééééééé", "is longer than 20 bytes")] // 11 characters, 22 bytes of UTF-8
    public void BlockDiskConfig_TryParse_RejectsBadInputWithAMessageNamingTheProblem(string text, string expected)
    {
        Assert.False(BlockDiskConfig.TryParse(text, out var disk, out string error));
        Assert.Null(disk);
        Assert.Contains(expected, error);
        Assert.StartsWith($"--disk '{text}'", error);
    }

    [Theory]
    [InlineData("tap=tap0,mac=02:00:00:00:00:01", "tap0", new byte[] { 0x02, 0, 0, 0, 0, 0x01 })]
    [InlineData("mac=52:54:00:AB:cd:ef,tap=vmtap", "vmtap", new byte[] { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef })]
    public void NetworkConfig_TryParse_AcceptsTapAndMacInAnyOrder(string text, string tap, byte[] mac)
    {
        Assert.True(NetworkConfig.TryParse(text, out var network, out string error), error);
        Assert.Equal(tap, network!.TapName);
        Assert.Equal(mac, network.Mac);
    }

    [Fact]
    public void NetworkConfig_TryParse_WithoutMac_GeneratesALocallyAdministeredUnicastMac()
    {
        Assert.True(NetworkConfig.TryParse("tap=tap0", out var network, out _));
        Assert.Equal("tap0", network!.TapName);
        Assert.Equal(6, network.Mac.Length);
        Assert.Equal(0x02, network.Mac[0] & 0x03);
    }

    [Fact]
    public void NetworkConfig_GenerateMac_IsAlwaysLocallyAdministeredUnicastAndRandom()
    {
        var macs = Enumerable.Range(0, 1000).Select(_ => NetworkConfig.GenerateMac()).ToList();
        Assert.All(macs, mac =>
        {
            Assert.Equal(6, mac.Length);
            Assert.Equal(0, mac[0] & 0x01);    // I/G bit clear: unicast
            Assert.Equal(0x02, mac[0] & 0x02); // U/L bit set: locally administered
        });
        Assert.True(macs.Select(mac => NetworkConfig.Format(mac)).Distinct().Count() > 990);
    }

    [Fact]
    public void NetworkConfig_Format_WritesLowercaseColonSeparatedOctets() =>
        Assert.Equal("02:0a:ff:00:10:01", NetworkConfig.Format([0x02, 0x0a, 0xff, 0x00, 0x10, 0x01]));

    [Theory]
    [InlineData("", "unknown option ''")]
    [InlineData("mac=02:00:00:00:00:01", "tap=NAME is missing")]
    [InlineData("tap=", "unknown option 'tap='")]
    [InlineData("tap=t0,vhost=on", "unknown option 'vhost=on'")]
    [InlineData("tap=t0,mac=01:00:5e:00:00:01", "'01:00:5e:00:00:01' is not a unicast MAC address")] // multicast
    [InlineData("tap=t0,mac=ff:ff:ff:ff:ff:ff", "is not a unicast MAC address")]
    [InlineData("tap=t0,mac=02:00:00:00:00", "is not a unicast MAC address")]
    [InlineData("tap=t0,mac=02:00:00:00:00:01:02", "is not a unicast MAC address")]
    [InlineData("tap=t0,mac=02-00-00-00-00-01", "is not a unicast MAC address")]
    [InlineData("tap=t0,mac=2:0:0:0:0:1", "is not a unicast MAC address")]
    [InlineData("tap=t0,mac=02:00:00:00:00:zz", "is not a unicast MAC address")]
    [InlineData("tap=t0,mac=02:00:00:00:00: 1", "is not a unicast MAC address")]
    [InlineData("tap=t0,mac=02:00:00:00:00:1 ", "is not a unicast MAC address")]
    [InlineData("tap=t0,mac=", "is not a unicast MAC address")]
    public void NetworkConfig_TryParse_RejectsBadInputWithAMessageNamingTheProblem(string text, string expected)
    {
        Assert.False(NetworkConfig.TryParse(text, out var network, out string error));
        Assert.Null(network);
        Assert.Contains(expected, error);
        Assert.StartsWith($"--net '{text}'", error);
    }
}
