using Vmm.Serialization;

namespace Vmm.Devices;

/// <summary>The CMOS RAM a guest wrote and the selected index (the clock itself is read from the host).</summary>
public sealed record CmosRtcState(byte Index, byte[] Ram)
{
    public void Write(StateWriter w)
    {
        w.WriteUInt8(Index);
        w.WriteBytes(Ram);
    }

    public static CmosRtcState Read(StateReader r)
    {
        byte index = r.ReadUInt8("CMOS index");
        byte[] ram = r.ReadBytes("CMOS RAM", CmosRtc.RamBytes);
        if (index >= CmosRtc.RamBytes || ram.Length != CmosRtc.RamBytes) throw new StateFormatException("CMOS state: index or RAM size out of range");
        return new CmosRtcState(index, ram);
    }
}
