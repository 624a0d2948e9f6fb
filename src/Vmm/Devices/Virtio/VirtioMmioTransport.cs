using System.Buffers.Binary;
using Vmm.Diagnostics;
using Vmm.Memory;

namespace Vmm.Devices.Virtio;

/// <summary>The virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2): the register window a
/// driver uses to negotiate features, set up queues and drive the status state machine. Kicks arrive
/// by ioeventfd (<see cref="Notify"/>, on the device thread); interrupts leave through an
/// <see cref="IInterruptLine"/> (an irqfd). A guest that breaks the queue rules gets
/// DEVICE_NEEDS_RESET and a configuration interrupt, never a VMM crash.</summary>
public sealed class VirtioMmioTransport : IBusDevice
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

    // Device status bits (virtio 1.2, section 2.1).
    public const uint StatusAcknowledge = 1, StatusDriver = 2, StatusDriverOk = 4, StatusFeaturesOk = 8;
    public const uint StatusDeviceNeedsReset = 64, StatusFailed = 128;

    public const uint InterruptUsedBuffer = 1, InterruptConfigChange = 2;

    private readonly object _lock = new();
    private readonly IVirtioDevice _device;
    private readonly GuestMemory _memory;
    private readonly IInterruptLine _interrupt;
    private readonly Logger _log;
    private readonly string _name;
    private readonly Virtqueue[] _queues;

    private uint _deviceFeaturesSel, _driverFeaturesSel, _queueSel, _status, _interruptStatus;
    private ulong _driverFeatures;
    private bool _active, _broken;

    public VirtioMmioTransport(string name, IVirtioDevice device, GuestMemory memory, IInterruptLine interrupt, Logger log)
    {
        _name = name;
        _device = device;
        _memory = memory;
        _interrupt = interrupt;
        _log = log;
        _queues = device.QueueMaxSizes.Select(size => new Virtqueue(size)).ToArray();
    }

    public IVirtioDevice Device => _device;
    public int QueueCount => _queues.Length;
    public uint Status { get { lock (_lock) return _status; } }

    public void Read(ulong offset, Span<byte> data)
    {
        data.Clear();
        lock (_lock)
        {
            if (offset >= ConfigSpace)
            {
                _device.ReadConfig((int)(offset - ConfigSpace), data);
                return;
            }
            // Registers are 32 bits wide and must be accessed as such (virtio 1.2, 4.2.2.2).
            if (data.Length != 4 || offset % 4 != 0) return;
            BinaryPrimitives.WriteUInt32LittleEndian(data, ReadRegister((int)offset));
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset == RegQueueNotify && data.Length == 4)
        {
            // Normally absorbed by the queue's ioeventfd; a kick that reaches the VMM (no ioeventfd, or a
            // queue index the driver made up) is handled the same way.
            Notify((int)BinaryPrimitives.ReadUInt32LittleEndian(data));
            return;
        }
        bool raise = false;
        lock (_lock)
        {
            if (offset >= ConfigSpace)
            {
                _device.WriteConfig((int)(offset - ConfigSpace), data);
                return;
            }
            if (data.Length != 4 || offset % 4 != 0) return;
            raise = WriteRegister((int)offset, BinaryPrimitives.ReadUInt32LittleEndian(data));
        }
        if (raise) _interrupt.Trigger();
    }

    /// <summary>Queue <paramref name="index"/> was kicked (its ioeventfd fired). Runs on the device thread.</summary>
    public void Notify(int index)
    {
        if (index < 0 || index >= _queues.Length) return;
        RunDeviceWork($"queue {index}", () => _device.ProcessQueue(index));
    }

    /// <summary>Runs device work (a kick, a backend becoming readable) while the device is active, serialized
    /// with register accesses; a guest that broke the queue rules puts the device in DEVICE_NEEDS_RESET.</summary>
    public void RunDeviceWork(string what, Action work)
    {
        bool raise = false;
        lock (_lock)
        {
            if (!_active || _broken) return;
            try
            {
                work();
            }
            catch (Exception e) when (e is VirtqueueException or GuestMemoryException)
            {
                raise = MarkBroken($"{what}: {e.Message}");
            }
        }
        if (raise) _interrupt.Trigger();
    }

    public VirtioTransportState SaveState()
    {
        lock (_lock)
            return new VirtioTransportState((uint)_device.Type, _deviceFeaturesSel, _driverFeaturesSel, _queueSel, _status,
                _interruptStatus, _driverFeatures, _active, _broken, _queues.Select(q => q.SaveState()).ToArray());
    }

    /// <summary>Takes over a transport saved elsewhere (snapshot or migration): registers, features and
    /// queue positions; an active device is started again on the restored queues without touching the
    /// rings. A saved queue layout that is not valid here leaves the device in DEVICE_NEEDS_RESET.</summary>
    public void RestoreState(VirtioTransportState state)
    {
        lock (_lock)
        {
            if (state.DeviceType != (uint)_device.Type || state.Queues.Count != _queues.Length)
                throw new State.StateFormatException(
                    $"{_name}: saved state is for device type {state.DeviceType} with {state.Queues.Count} queues, this is type {(uint)_device.Type} with {_queues.Length}");
            ResetDevice();
            (_deviceFeaturesSel, _driverFeaturesSel, _queueSel) = (state.DeviceFeaturesSel, state.DriverFeaturesSel, state.QueueSel);
            (_status, _interruptStatus, _driverFeatures) = (state.Status, state.InterruptStatus, state.DriverFeatures);
            for (int i = 0; i < _queues.Length; i++) _queues[i].RestoreState(state.Queues[i]);
            if (state.Broken) _broken = true;
            else if (state.Active) Activate();
        }
    }

    private uint ReadRegister(int offset)
    {
        Virtqueue? queue = _queueSel < _queues.Length ? _queues[_queueSel] : null;
        return offset switch
        {
            RegMagic => MagicValue,
            RegVersion => 2,
            RegDeviceId => (uint)_device.Type,
            RegVendorId => VendorId,
            RegDeviceFeatures => _deviceFeaturesSel switch
            {
                0 => (uint)_device.OfferedFeatures,
                1 => (uint)(_device.OfferedFeatures >> 32),
                _ => 0,
            },
            RegQueueNumMax => queue?.MaxSize ?? 0,
            RegQueueReady => queue?.Ready == true ? 1u : 0u,
            RegInterruptStatus => _interruptStatus,
            RegStatus => _status,
            // No shared memory regions: a length of all ones says "this region does not exist".
            RegShmLenLow or RegShmLenHigh or RegShmBaseLow or RegShmBaseHigh => uint.MaxValue,
            RegConfigGeneration => 0,
            _ => 0,
        };
    }

    /// <summary>Returns whether the interrupt line must be raised.</summary>
    private bool WriteRegister(int offset, uint value)
    {
        Virtqueue? queue = _queueSel < _queues.Length ? _queues[_queueSel] : null;
        bool queueConfigurable = queue is not null && !queue.Ready && (_status & StatusDriverOk) == 0;
        switch (offset)
        {
            case RegDeviceFeaturesSel: _deviceFeaturesSel = value; break;
            case RegDriverFeaturesSel: _driverFeaturesSel = value; break;
            case RegDriverFeatures when (_status & StatusFeaturesOk) == 0:
                if (_driverFeaturesSel == 0) _driverFeatures = (_driverFeatures & ~0xffff_ffffUL) | value;
                else if (_driverFeaturesSel == 1) _driverFeatures = (_driverFeatures & 0xffff_ffffUL) | ((ulong)value << 32);
                break;
            case RegQueueSel: _queueSel = value; break;
            case RegQueueNum when queueConfigurable: queue!.Size = (ushort)Math.Min(value, ushort.MaxValue); break;
            // After DRIVER_OK the queues belong to the device, QueueReady included (as in Firecracker): a
            // queue pulled from under it would leave its used ring unusable mid-request.
            case RegQueueReady when queue is not null && (_status & StatusDriverOk) == 0: queue.Ready = value == 1; break;
            case RegQueueDescLow when queueConfigurable: queue!.DescriptorTableAddress = SetLow(queue.DescriptorTableAddress, value); break;
            case RegQueueDescHigh when queueConfigurable: queue!.DescriptorTableAddress = SetHigh(queue.DescriptorTableAddress, value); break;
            case RegQueueDriverLow when queueConfigurable: queue!.AvailableRingAddress = SetLow(queue.AvailableRingAddress, value); break;
            case RegQueueDriverHigh when queueConfigurable: queue!.AvailableRingAddress = SetHigh(queue.AvailableRingAddress, value); break;
            case RegQueueDeviceLow when queueConfigurable: queue!.UsedRingAddress = SetLow(queue.UsedRingAddress, value); break;
            case RegQueueDeviceHigh when queueConfigurable: queue!.UsedRingAddress = SetHigh(queue.UsedRingAddress, value); break;
            case RegInterruptAck: _interruptStatus &= ~value; break;
            case RegStatus: return WriteStatus(value);
        }
        return false;
    }

    private bool WriteStatus(uint value)
    {
        if (value == 0)
        {
            ResetDevice();
            return false;
        }
        if ((value & _status) != _status)
        {
            _log.Warning($"{_name}: driver cleared status bits (0x{_status:x} -> 0x{value:x}) without a reset; ignored");
            return false;
        }
        uint added = value & ~_status;
        if ((added & StatusFeaturesOk) != 0 && !FeaturesAcceptable(out string why))
        {
            // Leaving FEATURES_OK clear is how the device refuses (virtio 1.2, 3.1.1 step 6).
            _log.Warning($"{_name}: refusing features 0x{_driverFeatures:x}: {why}");
            value &= ~StatusFeaturesOk;
        }
        _status = value;
        if ((added & StatusDriverOk) != 0 && (_status & StatusFeaturesOk) != 0) return Activate();
        return false;
    }

    private bool FeaturesAcceptable(out string why)
    {
        ulong unsupported = _driverFeatures & ~_device.OfferedFeatures;
        why = unsupported != 0 ? $"bits 0x{unsupported:x} were not offered"
            : (_driverFeatures & VirtioFeatures.Version1) == 0 ? "VIRTIO_F_VERSION_1 not accepted (legacy drivers are not supported)"
            : "";
        return why.Length == 0;
    }

    private bool Activate()
    {
        var active = new Virtqueue?[_queues.Length];
        try
        {
            for (int i = 0; i < _queues.Length; i++)
            {
                var q = _queues[i];
                if (!q.Ready) continue;
                q.EventIdxEnabled = (_driverFeatures & VirtioFeatures.RingEventIndex) != 0;
                q.IndirectEnabled = (_driverFeatures & VirtioFeatures.RingIndirectDescriptors) != 0;
                q.Validate(_memory);
                active[i] = q;
            }
        }
        catch (VirtqueueException e)
        {
            return MarkBroken($"invalid queue setup: {e.Message}");
        }
        _device.Activate(new VirtioActivation(_driverFeatures, active, _memory, SignalUsedBuffers));
        _active = true;
        return false;
    }

    /// <summary>Called by the device (on the device thread, under the transport lock) after it used buffers.</summary>
    private void SignalUsedBuffers()
    {
        _interruptStatus |= InterruptUsedBuffer;
        _interrupt.Trigger();
    }

    private bool MarkBroken(string why)
    {
        _log.Error($"{_name}: {why}; the device needs a reset (DEVICE_NEEDS_RESET)");
        _broken = true;
        _status |= StatusDeviceNeedsReset;
        _interruptStatus |= InterruptConfigChange;
        return true;
    }

    private void ResetDevice()
    {
        if (_active) _device.Reset();
        foreach (var q in _queues) q.Reset();
        _active = _broken = false;
        _status = _interruptStatus = 0;
        _driverFeatures = 0;
        _deviceFeaturesSel = _driverFeaturesSel = _queueSel = 0;
    }

    private static ulong SetLow(ulong current, uint value) => (current & ~0xffff_ffffUL) | value;
    private static ulong SetHigh(ulong current, uint value) => (current & 0xffff_ffffUL) | ((ulong)value << 32);
}
