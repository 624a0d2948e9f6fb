using Vmm.Devices;
using Vmm.Diagnostics;
using Xunit;

namespace Vmm.Tests.Devices;

public sealed class DeviceBusTests
{
    private readonly StringWriter _log = new();
    private readonly DeviceBus _bus;

    public DeviceBusTests() => _bus = new DeviceBus("pio", new Logger(_log, LogLevel.Debug));

    private string[] LogLines => _log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);

    [Fact]
    public void DeviceBus_DispatchesReadWithOffsetRelativeToDeviceBase()
    {
        var device = new RecordingDevice(0x42);
        _bus.Register(0x3f8, 8, device);
        var data = new byte[1];
        _bus.Read(0x3fd, data);
        Assert.Equal(0x42, data[0]);
        var access = Assert.Single(device.Accesses);
        Assert.False(access.IsWrite);
        Assert.Equal(5UL, access.Offset);
    }

    [Fact]
    public void DeviceBus_AGuestProbingEndlesslyManyAddresses_IsRememberedAndLoggedForABoundedNumber()
    {
        const int probes = 100_000;
        for (ulong address = 0; address < probes; address++) _bus.Read(0x1_0000_0000 + address * 8, new byte[4]);

        // Each address is reported once, up to the bound, then one line says the rest are only counted.
        Assert.Equal(DeviceBus.MaxReportedAddresses + 1, LogLines.Length);
        Assert.Contains("further addresses are only counted", LogLines[^1]);
        Assert.Equal(probes, _bus.UnclaimedAccesses);
        // Addresses reported before the bound was reached are still reported once only.
        _bus.Read(0x1_0000_0000, new byte[4]);
        Assert.Equal(DeviceBus.MaxReportedAddresses + 1, LogLines.Length);
    }

    [Fact]
    public void DeviceBus_DispatchesWriteWithOffsetAndData()
    {
        var device = new RecordingDevice();
        _bus.Register(0xd000_0000, 0x1000, device);
        _bus.Write(0xd000_0010, new byte[] { 1, 2, 3, 4 });
        var access = Assert.Single(device.Accesses);
        Assert.True(access.IsWrite);
        Assert.Equal(0x10UL, access.Offset);
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, access.Data);
    }

    [Fact]
    public void DeviceBus_FindsTheRightDeviceAmongMany()
    {
        // Registered out of order; every first and last byte must reach its own device.
        var bases = new ulong[] { 0x501, 0x60, 0x3f8, 0x70, 0x440, 0x64, 0x2f8, 0xcf8 };
        var lengths = new ulong[] { 2, 1, 8, 2, 1, 1, 8, 8 };
        var devices = bases.Select((_, i) => new RecordingDevice((byte)(0x10 + i))).ToArray();
        for (int i = 0; i < bases.Length; i++) _bus.Register(bases[i], lengths[i], devices[i]);

        for (int i = 0; i < bases.Length; i++)
        {
            foreach (ulong offset in new[] { 0UL, lengths[i] - 1 })
            {
                var data = new byte[1];
                _bus.Read(bases[i] + offset, data);
                Assert.Equal((byte)(0x10 + i), data[0]);
                Assert.Equal(offset, devices[i].Accesses[^1].Offset);
            }
        }
        Assert.All(devices, d => Assert.Equal(2, d.Accesses.Count));
    }

    [Fact]
    public void DeviceBus_GapsBetweenDevicesAreUnclaimed()
    {
        var a = new RecordingDevice();
        var b = new RecordingDevice();
        _bus.Register(0x60, 1, a);
        _bus.Register(0x64, 1, b);
        var data = new byte[1];
        _bus.Read(0x61, data);
        Assert.Equal(0xff, data[0]);
        _bus.Read(0x5f, data);
        _bus.Read(0x65, data);
        Assert.Empty(a.Accesses);
        Assert.Empty(b.Accesses);
    }

    [Theory]
    [InlineData(0x100UL, 0x10UL)] // identical
    [InlineData(0x0f8UL, 0x10UL)] // overlaps the start
    [InlineData(0x10fUL, 0x01UL)] // last byte
    [InlineData(0x104UL, 0x02UL)] // inside
    [InlineData(0x000UL, 0x1000UL)] // contains
    public void DeviceBus_RejectsOverlappingRegistration(ulong start, ulong length)
    {
        _bus.Register(0x100, 0x10, new RecordingDevice());
        var e = Assert.Throws<InvalidOperationException>(() => _bus.Register(start, length, new RecordingDevice()));
        Assert.Contains("overlaps a device at 0x100+0x10", e.Message);
        Assert.Contains("pio", e.Message);
    }

    [Fact]
    public void DeviceBus_AllowsAdjacentRegistration()
    {
        var low = new RecordingDevice(1);
        var high = new RecordingDevice(2);
        _bus.Register(0x100, 0x10, low);
        _bus.Register(0x110, 0x10, high);
        _bus.Register(0x0f0, 0x10, new RecordingDevice(3));
        var data = new byte[1];
        _bus.Read(0x10f, data);
        Assert.Equal(1, data[0]);
        _bus.Read(0x110, data);
        Assert.Equal(2, data[0]);
        _bus.Read(0x0ff, data);
        Assert.Equal(3, data[0]);
    }

    [Theory]
    [InlineData(0x100UL, 0UL)]
    [InlineData(0xffff_ffff_ffff_fff0UL, 0x20UL)]
    public void DeviceBus_RejectsEmptyOrWrappingRange(ulong start, ulong length)
    {
        Assert.Throws<ArgumentException>(() => _bus.Register(start, length, new RecordingDevice()));
    }

    [Fact]
    public void DeviceBus_UnclaimedReadFillsAllOnesAndIsLoggedOnce()
    {
        var data = new byte[] { 0, 0, 0, 0 };
        _bus.Read(0x80, data);
        Assert.Equal(new byte[] { 0xff, 0xff, 0xff, 0xff }, data);
        data[0] = 0;
        _bus.Read(0x80, data);
        Assert.Equal(0xff, data[0]);

        var line = Assert.Single(LogLines);
        Assert.Equal("vmm: unhandled pio read at 0x80 (4 bytes): returning all ones (reported once)", line);
    }

    [Fact]
    public void DeviceBus_UnclaimedWriteIsDroppedAndLoggedOncePerAddressAndDirection()
    {
        _bus.Write(0x80, new byte[] { 1 });
        _bus.Write(0x80, new byte[] { 2 });
        _bus.Read(0x80, new byte[1]);
        _bus.Write(0x81, new byte[] { 3 });
        var lines = LogLines;
        Assert.Equal(3, lines.Length);
        Assert.Equal("vmm: unhandled pio write at 0x80 (1 bytes): ignored (reported once)", lines[0]);
        Assert.Contains("read at 0x80", lines[1]);
        Assert.Contains("write at 0x81", lines[2]);
    }

    [Fact]
    public void DeviceBus_UnclaimedAccessNotLoggedAboveDebugLevel()
    {
        var quiet = new StringWriter();
        var bus = new DeviceBus("mmio", new Logger(quiet, LogLevel.Info));
        bus.Read(0x1000, new byte[4]);
        Assert.Equal("", quiet.ToString());
    }

    [Fact]
    public void DeviceBus_AccessStraddlingDeviceEndIsUnclaimed()
    {
        var device = new RecordingDevice();
        _bus.Register(0x70, 2, device);
        var data = new byte[2];
        _bus.Read(0x71, data);
        Assert.Equal(new byte[] { 0xff, 0xff }, data);
        _bus.Write(0x71, new byte[] { 1, 2 });
        Assert.Empty(device.Accesses);
        Assert.Equal(2, LogLines.Length);

        _bus.Read(0x70, data); // the whole device: claimed
        Assert.Single(device.Accesses);
    }
}
