using Vmm.Devices;
using Vmm.Vm;

namespace Vmm.Tests.Devices;

internal sealed class CountingInterruptLine : IInterruptLine
{
    private int _triggers;
    public int Triggers => Volatile.Read(ref _triggers);
    public void Trigger() => Interlocked.Increment(ref _triggers);
}

/// <summary>Records what devices ask of the machine, as the VmStop the machine would stop with.</summary>
internal sealed class RecordingVmControl : IMachineStop
{
    private readonly List<VmStop> _stops = [];
    public IReadOnlyList<VmStop> Stops { get { lock (_stops) return _stops.ToList(); } }
    public void RequestGuestReset(string how) { lock (_stops) _stops.Add(VmStop.Reset(how)); }
    public void RequestGuestExit(uint exitPortValue) { lock (_stops) _stops.Add(VmStop.ExitPort(exitPortValue)); }
}

/// <summary>Records every access with its offset, answering reads with a fixed byte.</summary>
internal sealed class RecordingDevice(byte readValue = 0x5a) : Vmm.Devices.IBusDevice
{
    public List<(bool IsWrite, ulong Offset, byte[] Data)> Accesses { get; } = [];

    public void Read(ulong offset, Span<byte> data)
    {
        data.Fill(readValue);
        Accesses.Add((false, offset, data.ToArray()));
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data) => Accesses.Add((true, offset, data.ToArray()));
}

internal static class BusDeviceExtensions
{
    public static byte ReadByte(this IBusDevice device, ulong offset)
    {
        Span<byte> b = stackalloc byte[1];
        device.Read(offset, b);
        return b[0];
    }

    public static void WriteByte(this IBusDevice device, ulong offset, byte value) => device.Write(offset, [value]);
}
