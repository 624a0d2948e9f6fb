using Vmm.Devices;
using Xunit;

namespace Vmm.Tests.Devices;

public sealed class CmosRtcTests
{
    private const ulong Index = 0, Value = 1;

    private DateTime _now = new(2026, 11, 23, 14, 5, 9, DateTimeKind.Utc); // a Monday
    private readonly CmosRtc _rtc;

    public CmosRtcTests() => _rtc = new CmosRtc(() => _now);

    private byte Register(byte index)
    {
        _rtc.WriteByte(Index, index);
        return _rtc.ReadByte(Value);
    }

    [Theory]
    [InlineData(0x00, 0x09)] // seconds
    [InlineData(0x02, 0x05)] // minutes
    [InlineData(0x04, 0x14)] // hours, 24-hour mode
    [InlineData(0x06, 0x02)] // day of week, Sunday = 1
    [InlineData(0x07, 0x23)] // day of month
    [InlineData(0x08, 0x11)] // month
    [InlineData(0x09, 0x26)] // year
    [InlineData(0x32, 0x20)] // century
    public void CmosRtc_ReadsClockInBcd(byte index, byte expected)
    {
        Assert.Equal(expected, Register(index));
    }

    [Fact]
    public void CmosRtc_FollowsTheClock()
    {
        Assert.Equal(0x09, Register(0x00));
        _now = new DateTime(1999, 12, 31, 23, 59, 58, DateTimeKind.Utc);
        Assert.Equal(0x58, Register(0x00));
        Assert.Equal(0x59, Register(0x02));
        Assert.Equal(0x23, Register(0x04));
        Assert.Equal(0x31, Register(0x07));
        Assert.Equal(0x12, Register(0x08));
        Assert.Equal(0x99, Register(0x09));
        Assert.Equal(0x19, Register(0x32));
    }

    [Fact]
    public void CmosRtc_StatusAHasNoUpdateInProgress()
    {
        byte a = Register(0x0a);
        Assert.Equal(0, a & 0x80);
        Assert.Equal(0x26, a);
    }

    [Fact]
    public void CmosRtc_StatusBIs24HourBcd()
    {
        byte b = Register(0x0b);
        Assert.Equal(0x02, b & 0x02); // 24-hour
        Assert.Equal(0, b & 0x04);    // BCD, not binary
    }

    [Fact]
    public void CmosRtc_StatusDReportsValidRamAndTime()
    {
        byte d = Register(0x0d);
        Assert.Equal(0x80, d & 0x80);
        Assert.Equal(0, d & 0x40);
        Assert.Equal(0, Register(0x0c));
    }

    [Fact]
    public void CmosRtc_IndexBit7IsNmiMaskNotIndex()
    {
        Assert.Equal(0x14, Register(0x84)); // NMI disabled, hours
        Assert.Equal(0x09, Register(0x80));
    }

    [Fact]
    public void CmosRtc_ReadingIndexPortGivesAllOnes()
    {
        _rtc.WriteByte(Index, 0x04);
        Assert.Equal(0xff, _rtc.ReadByte(Index));
        Assert.Equal(0x14, _rtc.ReadByte(Value)); // the index was kept
    }

    [Fact]
    public void CmosRtc_NvramAboveClockRegistersIsWritable()
    {
        _rtc.WriteByte(Index, 0x40);
        _rtc.WriteByte(Value, 0x5a);
        Assert.Equal(0x5a, Register(0x40));
        Assert.Equal(0x00, Register(0x41));
    }

    [Fact]
    public void CmosRtc_ClockRegistersIgnoreWrites()
    {
        _rtc.WriteByte(Index, 0x00);
        _rtc.WriteByte(Value, 0x45);
        Assert.Equal(0x09, Register(0x00));
        _rtc.WriteByte(Index, 0x0b);
        _rtc.WriteByte(Value, 0x06); // binary mode request
        Assert.Equal(0x02, Register(0x0b));
    }

    [Fact]
    public void CmosRtc_MultiByteReadClearsUpperBytes()
    {
        _rtc.WriteByte(Index, 0x00);
        var data = new byte[] { 0xee, 0xee };
        _rtc.Read(Value, data);
        Assert.Equal(new byte[] { 0x09, 0x00 }, data);
    }
}
