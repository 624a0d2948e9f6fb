using Vmm.Devices;
using Xunit;

namespace Vmm.Tests.Devices;

public sealed class BusDeviceWindowTests
{
    [Fact]
    public void BusDeviceWindow_AddsItsOffsetToEveryAccess()
    {
        var device = new RecordingDevice(0x33);
        var window = new BusDeviceWindow(device, 4);
        var data = new byte[2];
        window.Read(1, data);
        window.Write(0, new byte[] { 9 });
        Assert.Equal(new byte[] { 0x33, 0x33 }, data);
        Assert.Equal((false, 5UL), (device.Accesses[0].IsWrite, device.Accesses[0].Offset));
        Assert.Equal((true, 4UL), (device.Accesses[1].IsWrite, device.Accesses[1].Offset));
        Assert.Equal(new byte[] { 9 }, device.Accesses[1].Data);
    }
}
