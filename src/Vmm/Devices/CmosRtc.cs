using Vmm.Serialization;

namespace Vmm.Devices;

/// <summary>The MC146818 real-time clock behind ports 0x70/0x71, read-only, answering the host's current
/// UTC time in BCD, 24-hour mode. Linux reads it once at boot for the wall clock; without it an empty
/// bus's 0xff bytes make it warn that the RTC is invalid.</summary>
public sealed class CmosRtc(Func<DateTime> utcNow) : IBusDevice, IStatefulDevice
{
    public const ushort Port = 0x70;
    public const int PortCount = 2;

    private const byte Seconds = 0x00, Minutes = 0x02, Hours = 0x04, DayOfWeek = 0x06, DayOfMonth = 0x07;
    private const byte Month = 0x08, Year = 0x09, StatusA = 0x0a, StatusB = 0x0b, StatusC = 0x0c, StatusD = 0x0d;
    private const byte Century = 0x32;

    private const byte StatusB24Hour = 0x02;
    private const byte StatusDValid = 0x80;

    private readonly object _lock = new();
    public const int RamBytes = 128;

    private readonly byte[] _cmos = new byte[RamBytes];
    private byte _index;

    public void Read(ulong offset, Span<byte> data)
    {
        if (data.Length == 0) return;
        lock (_lock) data[0] = offset == 0 ? (byte)0xff : ReadRegister(_index);
        data[1..].Clear();
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.Length == 0) return;
        lock (_lock)
        {
            // Bit 7 of the index port is the NMI mask, not part of the index.
            if (offset == 0) _index = (byte)(data[0] & 0x7f);
            else if (_index >= 0x0e) _cmos[_index] = data[0];
        }
    }

    public string StateName => "cmos";

    public void SaveState(StateWriter writer) => SaveState().Write(writer);

    public void RestoreState(StateReader reader) => RestoreState(CmosRtcState.Read(reader));

    public CmosRtcState SaveState()
    {
        lock (_lock) return new CmosRtcState(_index, (byte[])_cmos.Clone());
    }

    public void RestoreState(CmosRtcState state)
    {
        lock (_lock)
        {
            _index = state.Index;
            state.Ram.CopyTo(_cmos, 0);
        }
    }

    private byte ReadRegister(byte index)
    {
        DateTime now = utcNow();
        return index switch
        {
            Seconds => Bcd(now.Second),
            Minutes => Bcd(now.Minute),
            Hours => Bcd(now.Hour),
            DayOfWeek => Bcd((int)now.DayOfWeek + 1),
            DayOfMonth => Bcd(now.Day),
            Month => Bcd(now.Month),
            Year => Bcd(now.Year % 100),
            Century => Bcd(now.Year / 100),
            StatusA => 0x26, // 32.768 kHz base, 1024 Hz rate; UIP clear: no update in progress
            StatusB => StatusB24Hour,
            StatusC => 0,
            StatusD => StatusDValid,
            _ => _cmos[index],
        };
    }

    private static byte Bcd(int value) => (byte)(((value / 10) << 4) | (value % 10));
}
