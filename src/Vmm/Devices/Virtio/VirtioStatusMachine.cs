using Vmm.Diagnostics;
using Vmm.Memory;

namespace Vmm.Devices.Virtio;

/// <summary>What every virtio transport shares, whatever its register layout (MMIO today, PCI next): feature
/// negotiation, the device status state machine (virtio 1.2, 2.1 and 3.1), the queues' ownership, the
/// interrupt status, and running the device's work.
/// <para>Two locks, taken in this order: <c>_workLock</c> while the device works (a kick, a backend event) and
/// while it is activated or reset; <c>_lock</c>, briefly, for the registers. So a register access never waits
/// for device work (a vCPU reading a config field does not wait for a disk flush); only a status write, which
/// starts or resets the device, waits for work in progress to finish, as a reset must. The interrupt status is
/// an atomic word, read without any lock from the guest's interrupt handler.</para>
/// A guest that breaks the rules gets DEVICE_NEEDS_RESET and a configuration interrupt, never a VMM failure.</summary>
public sealed class VirtioStatusMachine
{
    // Device status bits (virtio 1.2, section 2.1).
    public const uint StatusAcknowledge = 1, StatusDriver = 2, StatusDriverOk = 4, StatusFeaturesOk = 8;
    public const uint StatusDeviceNeedsReset = 64, StatusFailed = 128;

    public const uint InterruptUsedBuffer = 1, InterruptConfigChange = 2;

    private readonly object _workLock = new();
    private readonly object _lock = new();
    private readonly IVirtioDevice _device;
    private readonly GuestMemory _memory;
    private readonly IInterruptLine _interrupt;
    private readonly RateLimitedLog _log;
    private readonly string _name;
    private readonly Virtqueue[] _queues;

    private uint _status;
    private int _interruptStatus;
    private ulong _driverFeatures;
    private volatile bool _active, _broken;

    public VirtioStatusMachine(string name, IVirtioDevice device, GuestMemory memory, IInterruptLine interrupt, Logger log)
    {
        _name = name;
        _device = device;
        _memory = memory;
        _interrupt = interrupt;
        _log = new RateLimitedLog(log);
        _queues = device.QueueMaxSizes.Select(size => new Virtqueue(size)).ToArray();
    }

    public IVirtioDevice Device => _device;
    public int QueueCount => _queues.Length;
    public uint Status { get { lock (_lock) return _status; } }
    public uint InterruptStatus => (uint)Volatile.Read(ref _interruptStatus);

    /// <summary>32 bits of the offered features: page 0 is bits 0-31, page 1 bits 32-63, later pages zero.</summary>
    public uint DeviceFeatures(uint page) => page switch
    {
        0 => (uint)_device.OfferedFeatures,
        1 => (uint)(_device.OfferedFeatures >> 32),
        _ => 0,
    };

    /// <summary>The driver's features, 32 bits at a time; ignored once FEATURES_OK is set.</summary>
    public void WriteDriverFeatures(uint page, uint value)
    {
        lock (_lock)
        {
            if ((_status & StatusFeaturesOk) != 0) return;
            if (page == 0) _driverFeatures = (_driverFeatures & ~0xffff_ffffUL) | value;
            else if (page == 1) _driverFeatures = (_driverFeatures & 0xffff_ffffUL) | ((ulong)value << 32);
        }
    }

    public void ReadConfig(int offset, Span<byte> data)
    {
        lock (_lock) _device.ReadConfig(offset, data);
    }

    public void WriteConfig(int offset, ReadOnlySpan<byte> data)
    {
        lock (_lock) _device.WriteConfig(offset, data);
    }

    public void AcknowledgeInterrupt(uint bits) => Interlocked.And(ref _interruptStatus, (int)~bits);

    /// <summary>Reads a queue's configuration (null for an index the device does not have).</summary>
    public T? ReadQueue<T>(uint index, Func<Virtqueue, T> read) where T : struct
    {
        lock (_lock) return index < _queues.Length ? read(_queues[index]) : null;
    }

    /// <summary>Changes a queue's configuration while the driver may (before DRIVER_OK, and, but for
    /// readiness, while the queue is not ready). After DRIVER_OK the queues belong to the device, readiness
    /// included (as in Firecracker): a queue pulled from under it would leave its used ring unusable.</summary>
    public void ConfigureQueue(uint index, Action<Virtqueue> change, bool readiness = false)
    {
        lock (_lock)
        {
            if (index >= _queues.Length || (_status & StatusDriverOk) != 0) return;
            var queue = _queues[index];
            if (!readiness && queue.Ready) return;
            change(queue);
        }
    }

    /// <summary>A write of the device status: 0 resets the device; FEATURES_OK is kept only for acceptable
    /// features; DRIVER_OK starts the device on its queues.</summary>
    public void WriteStatus(uint value)
    {
        bool raise;
        lock (_workLock)
        {
            lock (_lock) raise = ChangeStatus(value);
        }
        if (raise) _interrupt.Trigger();
    }

    /// <summary>Queue <paramref name="index"/> was kicked. Runs on the device thread.</summary>
    public void Notify(int index)
    {
        if (index < 0 || index >= _queues.Length) return;
        RunDeviceWork(null, null, index);
    }

    /// <summary>Runs device work (a kick, a backend becoming readable) while the device is active, one piece at a
    /// time. A failure of the device (a guest that broke the queue rules, a backend that failed) puts the device
    /// in DEVICE_NEEDS_RESET; the VM runs on.</summary>
    public void RunDeviceWork(string what, Action work) => RunDeviceWork(what, work, queue: -1);

    /// <summary>Either <paramref name="work"/>, or (when it is null) processing <paramref name="queue"/>: a kick
    /// allocates nothing on its way to the device.</summary>
    private void RunDeviceWork(string? what, Action? work, int queue)
    {
        bool raise = false;
        lock (_workLock)
        {
            if (!_active || _broken) return;
            try
            {
                if (work is null) _device.ProcessQueue(queue);
                else work();
            }
            catch (VmmException e)
            {
                lock (_lock) raise = MarkBroken($"{what ?? $"queue {queue}"}: {e.Message}");
            }
        }
        if (raise) _interrupt.Trigger();
    }

    /// <summary>The transport-independent part of the state: status, features, interrupt status, queues.</summary>
    public (uint Status, uint InterruptStatus, ulong DriverFeatures, bool Active, bool Broken, VirtqueueState[] Queues) SaveState()
    {
        lock (_workLock)
        lock (_lock)
            return (_status, InterruptStatus, _driverFeatures, _active, _broken, _queues.Select(q => q.SaveState()).ToArray());
    }

    /// <summary>Takes over a device saved elsewhere (snapshot or migration); an active device is started again on
    /// the restored queues without touching the rings. A saved queue layout that is not valid here leaves the
    /// device in DEVICE_NEEDS_RESET.</summary>
    public void RestoreState(uint status, uint interruptStatus, ulong driverFeatures, bool active, bool broken, IReadOnlyList<VirtqueueState> queues)
    {
        if (queues.Count != _queues.Length)
            throw new Serialization.StateFormatException($"{_name}: saved state has {queues.Count} queues, this device has {_queues.Length}");
        lock (_workLock)
        lock (_lock)
        {
            ResetDevice();
            (_status, _driverFeatures) = (status, driverFeatures);
            Volatile.Write(ref _interruptStatus, (int)interruptStatus);
            for (int i = 0; i < _queues.Length; i++) _queues[i].RestoreState(queues[i]);
            if (broken) _broken = true;
            else if (active) Activate();
        }
    }

    private void SignalUsedBuffers()
    {
        Interlocked.Or(ref _interruptStatus, (int)InterruptUsedBuffer);
        _interrupt.Trigger();
    }

    /// <summary>Under both locks. Returns whether the interrupt line must be raised.</summary>
    private bool ChangeStatus(uint value)
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

    /// <summary>Under both locks.</summary>
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
            _device.Activate(new VirtioActivation(_driverFeatures, active, _memory, SignalUsedBuffers));
        }
        catch (VirtqueueException e)
        {
            return MarkBroken($"invalid queue setup: {e.Message}");
        }
        catch (VmmException e)
        {
            return MarkBroken($"cannot start the device: {e.Message}");
        }
        _active = true;
        return false;
    }

    /// <summary>Under <c>_lock</c>.</summary>
    private bool MarkBroken(string why)
    {
        _log.Error($"{_name}: {why}; the device needs a reset (DEVICE_NEEDS_RESET)");
        _broken = true;
        _status |= StatusDeviceNeedsReset;
        Interlocked.Or(ref _interruptStatus, (int)InterruptConfigChange);
        return true;
    }

    /// <summary>Under both locks.</summary>
    private void ResetDevice()
    {
        if (_active)
        {
            try
            {
                _device.Reset();
            }
            catch (VmmException e)
            {
                _log.Warning($"{_name}: reset: {e.Message}");
            }
        }
        foreach (var q in _queues) q.Reset();
        _active = _broken = false;
        _status = 0;
        Volatile.Write(ref _interruptStatus, 0);
        _driverFeatures = 0;
    }
}
