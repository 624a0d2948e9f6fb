using System.Buffers.Binary;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Serialization;

namespace Vmm.Devices.Virtio;

/// <summary>The virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2): the register window a driver
/// uses to negotiate features, set up queues and drive the device status, mapped onto a
/// <see cref="VirtioStatusMachine"/>. Kicks arrive by ioeventfd (<see cref="Notify"/>, on the device thread);
/// interrupts leave through an <see cref="IInterruptLine"/> (an irqfd). The window itself holds only the
/// three selector registers.</summary>
public sealed class VirtioMmioTransport : IBusDevice, IStatefulDevice
{
    public const ulong WindowBytes = 0x1000;
    public const uint MagicValue = 0x7472_6976; // "virt"
    public const uint VendorId = 0x00_4d_4d_56;  // "VMM"

    // Register offsets (virtio 1.2, table "MMIO Device Register Layout").
    public const int RegMagic = 0x000, RegVersion = 0x004, RegDeviceId = 0x008, RegVendorId = 0x00c;
    public const int RegDeviceFeatures = 0x010, RegDeviceFeaturesSel = 0x014;
    public const int RegDriverFeatures = 0x020, RegDriverFeaturesSel = 0x024;
    public const int RegQueueSel = 0x030, RegQueueNumMax = 0x034, RegQueueNum = 0x038, RegQueueReady = 0x044;
    public const int RegQueueNotify = 0x050, RegInterruptStatus = 0x060, RegInterruptAck = 0x064, RegStatus = 0x070;
    public const int RegQueueDescLow = 0x080, RegQueueDescHigh = 0x084, RegQueueDriverLow = 0x090, RegQueueDriverHigh = 0x094;
    public const int RegQueueDeviceLow = 0x0a0, RegQueueDeviceHigh = 0x0a4;
    public const int RegShmSel = 0x0ac, RegShmLenLow = 0x0b0, RegShmLenHigh = 0x0b4, RegShmBaseLow = 0x0b8, RegShmBaseHigh = 0x0bc;
    public const int RegConfigGeneration = 0x0fc, ConfigSpace = 0x100;

    public const uint StatusAcknowledge = VirtioStatusMachine.StatusAcknowledge, StatusDriver = VirtioStatusMachine.StatusDriver;
    public const uint StatusDriverOk = VirtioStatusMachine.StatusDriverOk, StatusFeaturesOk = VirtioStatusMachine.StatusFeaturesOk;
    public const uint StatusDeviceNeedsReset = VirtioStatusMachine.StatusDeviceNeedsReset, StatusFailed = VirtioStatusMachine.StatusFailed;
    public const uint InterruptUsedBuffer = VirtioStatusMachine.InterruptUsedBuffer, InterruptConfigChange = VirtioStatusMachine.InterruptConfigChange;

    private readonly VirtioStatusMachine _machine;
    // A 32-bit store is atomic; two vCPUs racing on a selector is a driver bug that costs it consistency only.
    private volatile uint _deviceFeaturesSel, _driverFeaturesSel, _queueSel;

    /// <param name="stateName">Names this device's state in a saved VM (<see cref="IStatefulDevice.StateName"/>);
    /// by default <paramref name="name"/>.</param>
    public VirtioMmioTransport(string name, IVirtioDevice device, GuestMemory memory, IInterruptLine interrupt, Logger log, string? stateName = null)
    {
        _machine = new VirtioStatusMachine(name, device, memory, interrupt, log);
        StateName = stateName ?? name;
    }

    public IVirtioDevice Device => _machine.Device;
    public int QueueCount => _machine.QueueCount;
    public uint Status => _machine.Status;
    public string StateName { get; }

    public void Read(ulong offset, Span<byte> data)
    {
        data.Clear();
        if (offset >= ConfigSpace)
        {
            _machine.ReadConfig((int)(offset - ConfigSpace), data);
            return;
        }
        // Registers are 32 bits wide and must be accessed as such (virtio 1.2, 4.2.2.2).
        if (data.Length != 4 || offset % 4 != 0) return;
        BinaryPrimitives.WriteUInt32LittleEndian(data, ReadRegister((int)offset));
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset >= ConfigSpace)
        {
            _machine.WriteConfig((int)(offset - ConfigSpace), data);
            return;
        }
        if (data.Length != 4 || offset % 4 != 0) return;
        WriteRegister((int)offset, BinaryPrimitives.ReadUInt32LittleEndian(data));
    }

    /// <summary>Queue <paramref name="index"/> was kicked (its ioeventfd fired). Runs on the device thread.</summary>
    public void Notify(int index) => _machine.Notify(index);

    /// <inheritdoc cref="VirtioStatusMachine.RunDeviceWork"/>
    public void RunDeviceWork(string what, Action work) => _machine.RunDeviceWork(what, work);

    public VirtioTransportState SaveState()
    {
        var (status, interrupt, features, active, broken, queues) = _machine.SaveState();
        return new VirtioTransportState((uint)Device.Type, _deviceFeaturesSel, _driverFeaturesSel, _queueSel, status,
            interrupt, features, active, broken, queues);
    }

    /// <summary>Takes over a transport saved elsewhere (snapshot or migration): registers, features and
    /// queue positions (see <see cref="VirtioStatusMachine.RestoreState"/>).</summary>
    public void RestoreState(VirtioTransportState state)
    {
        if (state.DeviceType != (uint)Device.Type)
            throw new StateFormatException($"{StateName}: saved state is for virtio device type {state.DeviceType}, this is type {(uint)Device.Type}");
        _machine.RestoreState(state.Status, state.InterruptStatus, state.DriverFeatures, state.Active, state.Broken, state.Queues);
        (_deviceFeaturesSel, _driverFeaturesSel, _queueSel) = (state.DeviceFeaturesSel, state.DriverFeaturesSel, state.QueueSel);
    }

    public void SaveState(StateWriter writer) => SaveState().Write(writer);

    public void RestoreState(StateReader reader) => RestoreState(VirtioTransportState.Read(reader));

    public void FlushToStorage() => Device.FlushToStorage();

    private uint ReadRegister(int offset)
    {
        uint queue = _queueSel;
        return offset switch
        {
            RegMagic => MagicValue,
            RegVersion => 2,
            RegDeviceId => (uint)Device.Type,
            RegVendorId => VendorId,
            RegDeviceFeatures => _machine.DeviceFeatures(_deviceFeaturesSel),
            RegQueueNumMax => _machine.ReadQueue(queue, q => q.MaxSize) ?? 0,
            RegQueueReady => _machine.ReadQueue(queue, q => q.Ready) == true ? 1u : 0u,
            RegInterruptStatus => _machine.InterruptStatus,
            RegStatus => _machine.Status,
            // No shared memory regions: a length of all ones says "this region does not exist".
            RegShmLenLow or RegShmLenHigh or RegShmBaseLow or RegShmBaseHigh => uint.MaxValue,
            _ => 0,
        };
    }

    private void WriteRegister(int offset, uint value)
    {
        uint queue = _queueSel;
        switch (offset)
        {
            case RegDeviceFeaturesSel: _deviceFeaturesSel = value; break;
            case RegDriverFeaturesSel: _driverFeaturesSel = value; break;
            case RegDriverFeatures: _machine.WriteDriverFeatures(_driverFeaturesSel, value); break;
            case RegQueueSel: _queueSel = value; break;
            case RegQueueNum: _machine.ConfigureQueue(queue, q => q.Size = (ushort)Math.Min(value, ushort.MaxValue)); break;
            case RegQueueReady: _machine.ConfigureQueue(queue, q => q.Ready = value == 1, readiness: true); break;
            case RegQueueDescLow: _machine.ConfigureQueue(queue, q => q.DescriptorTableAddress = SetLow(q.DescriptorTableAddress, value)); break;
            case RegQueueDescHigh: _machine.ConfigureQueue(queue, q => q.DescriptorTableAddress = SetHigh(q.DescriptorTableAddress, value)); break;
            case RegQueueDriverLow: _machine.ConfigureQueue(queue, q => q.AvailableRingAddress = SetLow(q.AvailableRingAddress, value)); break;
            case RegQueueDriverHigh: _machine.ConfigureQueue(queue, q => q.AvailableRingAddress = SetHigh(q.AvailableRingAddress, value)); break;
            case RegQueueDeviceLow: _machine.ConfigureQueue(queue, q => q.UsedRingAddress = SetLow(q.UsedRingAddress, value)); break;
            case RegQueueDeviceHigh: _machine.ConfigureQueue(queue, q => q.UsedRingAddress = SetHigh(q.UsedRingAddress, value)); break;
            // Normally absorbed by the queue's ioeventfd; a kick that reaches the VMM (no ioeventfd, or a
            // queue index the driver made up) is handled the same way.
            case RegQueueNotify: _machine.Notify((int)value); break;
            case RegInterruptAck: _machine.AcknowledgeInterrupt(value); break;
            case RegStatus:
                _machine.WriteStatus(value);
                if (value == 0) (_deviceFeaturesSel, _driverFeaturesSel, _queueSel) = (0, 0, 0);
                break;
        }
    }

    private static ulong SetLow(ulong current, uint value) => (current & ~0xffff_ffffUL) | value;
    private static ulong SetHigh(ulong current, uint value) => (current & 0xffff_ffffUL) | ((ulong)value << 32);
}
