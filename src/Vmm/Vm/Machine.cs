using System.Diagnostics;
using Vmm.Arch;
using Vmm.Boot;
using Vmm.Devices;
using Vmm.Devices.Virtio;
using Vmm.Diagnostics;
using Vmm.Kvm;
using Vmm.Memory;
using Vmm.Migration;
using Vmm.State;

namespace Vmm.Vm;

/// <summary>A built VM: KVM objects, guest RAM with the kernel loaded, the legacy devices on their
/// ports, and the vCPU threads. <see cref="Run"/> runs it until something stops it.</summary>
public sealed class Machine : IVmControl, IDisposable
{
    public const int MaxVcpus = 32;

    private readonly KvmSystem _kvm;
    private readonly KvmVm _vm;
    private readonly GuestMemory _memory;
    private readonly List<KvmVcpu> _vcpus = [];
    private readonly List<VcpuRunner> _runners = [];
    private readonly ManualResetEventSlim _stopped = new();
    private readonly EventLoop _eventLoop;
    private readonly VcpuPauseGate _pauseGate = new();
    private readonly object _stateLock = new();
    private readonly DateTime _startedUtc = DateTime.UtcNow;
    private readonly VirtioMmioDevices _virtio = new();
    private readonly Logger _log;
    private readonly VcpuThrottle _throttle;
    private readonly VcpuStateSupport _stateSupport;
    private I8042Controller _i8042 = null!;
    private CmosRtc _cmos = null!;
    private readonly List<KvmDirtyRing> _dirtyRings = [];
    private DirtyPageTracker? _tracker;
    private long _dirtyRingFullExits;
    private VmStop? _stop;
    private bool _started;

    public DeviceBus IoPorts { get; }
    public DeviceBus Mmio { get; }
    public Serial8250 Serial { get; }
    /// <summary>How the kernel was loaded; null for a machine built to take a saved state.</summary>
    public BootSetup? Boot { get; }
    public GuestMemory Memory => _memory;
    public MachineDescription Description { get; }

    /// <param name="memoryImagePath">null: boot the kernel in <paramref name="config"/>. Otherwise build the
    /// same machine without loading anything, RAM mapped from this image ("" for fresh, zeroed RAM that a
    /// migration fills), ready for <see cref="RestoreState"/>.</param>
    private Machine(MachineConfig config, Logger log, KvmSystem kvm, string? memoryImagePath)
    {
        bool booting = memoryImagePath is null;
        Description = new MachineDescription(config.MemoryBytes, config.VcpuCount, config.Disks, config.Networks);
        _log = log;
        _kvm = kvm;
        IoPorts = new DeviceBus("port", log);
        Mmio = new DeviceBus("MMIO", log);
        _eventLoop = new EventLoop(e => RequestStop(VmStop.Error($"device thread: {e.Message}")));
        bool nested = config.NestedKvmHostOverride ?? NestedKvm.IsActiveOnThisHost();
        bool workarounds = nested && config.NestedKvmWorkarounds;
        string commandLine = config.CommandLine;
        if (workarounds && booting)
        {
            commandLine = $"{commandLine} {NestedKvm.GuestCommandLineOptions}".Trim();
            log.Info($"nested KVM backend (kvm_pvm): adding guest kernel options \"{NestedKvm.GuestCommandLineOptions}\"; int3 and fwait emulation failures are completed by vmm (--no-nested-workarounds turns both off)");
        }
        else if (nested && !workarounds)
        {
            log.Warning("nested KVM backend (kvm_pvm) detected but its workarounds are off: a Linux guest is unlikely to boot");
        }

        try
        {
            _vm = kvm.CreateVm();
        }
        catch
        {
            _eventLoop.Dispose();
            throw;
        }
        try
        {
            // Intel needs these pages for real-mode emulation; KVM on AMD accepts and ignores them.
            _vm.SetTssAddress(X86Layout.TssAddress);
            _vm.SetIdentityMapAddress(X86Layout.IdentityMapAddress);
            _vm.CreateIrqchip();
            _vm.CreatePit2();

            var ranges = X86Layout.RamRanges(config.MemoryBytes);
            _memory = string.IsNullOrEmpty(memoryImagePath) ? GuestMemory.Allocate(ranges) : GuestMemory.MapImage(ranges, memoryImagePath);
            foreach (var region in _memory.Regions)
                _vm.SetUserMemoryRegion(region.Slot, region.GuestAddress, region.SizeBytes, region.HostAddress);

            Serial = new Serial8250(config.SerialOutput, new KvmInterruptLine(_vm, Serial8250.Com1Irq));
            Serial.OutputFailed += e => log.Warning($"guest console output failed ({e.Message}); further output is dropped");
            AddLegacyDevices();
            for (int i = 0; i < config.Disks.Count; i++)
                _virtio.Add($"virtio-blk {config.Disks[i].Path}", new VirtioBlock(config.Disks[i]), _vm, Mmio, _eventLoop, _memory, log);
            foreach (var network in config.Networks)
            {
                var net = new VirtioNet(network);
                _virtio.Add($"virtio-net {network.TapName}", net, _vm, Mmio, _eventLoop, _memory, log);
                log.Info($"virtio-net on TAP {network.TapName}, guest MAC {NetworkConfig.Format(network.Mac)}");
            }
            commandLine = $"{commandLine} {_virtio.KernelCommandLine()}".Trim();

            var supportedCpuid = kvm.GetSupportedCpuid();
            int kvmMaxVcpus = kvm.CheckExtension(KvmCapability.MaxVcpus);
            if (kvmMaxVcpus > 0 && config.VcpuCount > kvmMaxVcpus)
                throw new BootException($"--cpus {config.VcpuCount}: this host's KVM allows at most {kvmMaxVcpus} vCPUs per VM");
            if (booting)
            {
                if (string.IsNullOrEmpty(config.KernelPath)) throw new BootException("no kernel given (--kernel)");
                Boot = LinuxLoader.Load(_memory, config.KernelPath, config.InitrdPath, commandLine);
                BootCpuState.WriteTables(_memory, Boot.EntryMode);
                var leaf1 = supportedCpuid.FirstOrDefault(e => e.Function == 1);
                _memory.Write(MpTable.Address, MpTable.Build(config.VcpuCount, leaf1.Eax, leaf1.Edx));
            }
            _throttle = new VcpuThrottle(_runners);
            int dirtyRingBytes = config.DirtyRing ? EnableDirtyRing() : 0;
            for (int i = 0; i < config.VcpuCount; i++)
            {
                var vcpu = _vm.CreateVcpu(i);
                _vcpus.Add(vcpu);
                if (dirtyRingBytes > 0) _dirtyRings.Add(vcpu.MapDirtyRing(dirtyRingBytes));
                BootCpuState.ApplyCommon(vcpu, supportedCpuid, config.VcpuCount);
                _runners.Add(new VcpuRunner(vcpu, IoPorts, Mmio, _memory, this, () => _stop is not null, _pauseGate, () => _throttle.SleepPerSlice, OnDirtyRingFull, workarounds));
            }
            if (Boot is not null) BootCpuState.Apply(_vcpus[0], Boot.EntryAddress, Boot.EntryMode, Boot.ZeroPageAddress);
            _stateSupport = new VcpuStateSupport(kvm, _vm);
            // Finding the MSRs KVM refuses takes an ioctl per refusal: done now, not in a migration's downtime.
            _stateSupport.ReadMsrs(_vcpus[0]);
        }
        catch
        {
            DisposeKvmObjects();
            throw;
        }
    }

    /// <summary>64 Ki entries of 16 bytes per vCPU (or what KVM allows): at the ~1.5 GB/s a tracked guest can
    /// dirty on a slow host, a ring fills in about 0.2 s, so full rings are rare between harvests.</summary>
    private int EnableDirtyRing()
    {
        int maxBytes = _vm.CheckExtension(KvmCapability.DirtyLogRing);
        if (maxBytes <= 0) throw new BootException("--dirty-ring: this host's KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)");
        int bytes = Math.Min(maxBytes, 1 << 20);
        _vm.EnableCap(KvmCapability.DirtyLogRing, (ulong)bytes);
        return bytes;
    }

    /// <summary>Starts tracking the pages the guest and the devices write, for a migration.</summary>
    internal DirtyPageTracker StartDirtyTracking()
    {
        var tracker = new DirtyPageTracker(_vm, _memory, _dirtyRings.Count > 0 ? _dirtyRings : null);
        Volatile.Write(ref _tracker, tracker);
        tracker.Start();
        return tracker;
    }

    /// <summary>How often a vCPU stopped because its dirty ring was full (each costs it a harvest).</summary>
    internal long DirtyRingFullExits => Interlocked.Read(ref _dirtyRingFullExits);

    internal void StopDirtyTracking(DirtyPageTracker tracker)
    {
        tracker.Stop();
        Interlocked.CompareExchange(ref _tracker, null, tracker);
    }

    /// <summary>A vCPU's dirty ring is full: it cannot run on until the rings are harvested and reset.</summary>
    private void OnDirtyRingFull()
    {
        Interlocked.Increment(ref _dirtyRingFullExits);
        if (Volatile.Read(ref _tracker) is { } tracker)
        {
            tracker.HarvestRings();
            return;
        }
        // Entries left from a finished migration: nobody needs them.
        lock (_dirtyRings)
        {
            foreach (var ring in _dirtyRings) ring.Harvest((_, _) => { });
            _vm.ResetDirtyRings();
        }
    }

    /// <summary>Builds the VM; bad configuration is a <see cref="BootException"/>, KVM trouble a <see cref="KvmException"/>.</summary>
    public static Machine Create(MachineConfig config, Logger log)
    {
        Validate(config);
        return Build(config, log, memoryImagePath: null);
    }

    /// <summary>Builds the machine a saved state describes, without loading a kernel, for
    /// <see cref="RestoreState"/>: RAM is mapped lazily from <paramref name="memoryImagePath"/> (a snapshot),
    /// or left zeroed for a migration to fill when it is null.</summary>
    public static Machine CreateForRestore(MachineConfig config, Logger log, string? memoryImagePath = null)
    {
        Validate(config);
        return Build(config, log, memoryImagePath ?? "");
    }

    private static void Validate(MachineConfig config)
    {
        if (config.VcpuCount < 1)
            throw new BootException($"--cpus must be at least 1 (got {config.VcpuCount})");
        if (config.VcpuCount > MaxVcpus)
            throw new BootException($"--cpus {config.VcpuCount}: vmm runs at most {MaxVcpus} vCPUs");
        if (config.MemoryBytes < X86Layout.MinimumMemoryBytes)
            throw new BootException($"--memory {config.MemoryBytes >> 20} MiB is too little: vmm needs at least {X86Layout.MinimumMemoryBytes >> 20} MiB");
        if (config.MemoryBytes % 4096 != 0)
            throw new BootException("--memory must be a multiple of 4 KiB");
    }

    private static Machine Build(MachineConfig config, Logger log, string? memoryImagePath)
    {
        var kvm = KvmSystem.Open();
        try
        {
            return new Machine(config, log, kvm, memoryImagePath);
        }
        catch
        {
            kvm.Dispose();
            throw;
        }
    }

    private void AddLegacyDevices()
    {
        IoPorts.Register(Serial8250.Com1Port, Serial8250.RegisterCount, Serial);
        _i8042 = new I8042Controller(this, new KvmInterruptLine(_vm, I8042Controller.KeyboardIrq));
        IoPorts.Register(I8042Controller.DataPort, 1, _i8042);
        IoPorts.Register(I8042Controller.CommandPort, 1, new BusDeviceWindow(_i8042, I8042Controller.CommandPort - I8042Controller.DataPort));
        _cmos = new CmosRtc(() => DateTime.UtcNow);
        IoPorts.Register(CmosRtc.Port, CmosRtc.PortCount, _cmos);
        IoPorts.Register(BootTimer.Port, 4, new BootTimer(_log, SinceProcessStart));
        IoPorts.Register(DebugExitPort.Port, 4, new DebugExitPort(this));
    }

    private static TimeSpan SinceProcessStart() => DateTime.Now - Process.GetCurrentProcess().StartTime;

    /// <summary>Runs the vCPUs until the guest or the host stops the VM; returns why.</summary>
    public VmStop Run()
    {
        lock (_stateLock)
        {
            _eventLoop.Start();
            if (IsPaused) _eventLoop.Pause();
            foreach (var runner in _runners) runner.Start();
            _started = true;
        }
        _stopped.Wait();
        foreach (var runner in _runners) runner.Kick();
        foreach (var runner in _runners) runner.Join();
        _eventLoop.Stop();
        return _stop!;
    }

    public void RequestStop(VmStop stop)
    {
        if (Interlocked.CompareExchange(ref _stop, stop, null) is not null) return;
        _stopped.Set();
        foreach (var runner in _runners) runner.Kick();
        _pauseGate.Release();
    }

    public bool IsPaused { get; private set; }
    public int VcpuCount => _runners.Count;
    public TimeSpan Uptime => DateTime.UtcNow - _startedUtc;

    /// <summary>Stops every vCPU between two instructions, then the device thread between two batches of
    /// events, and returns once all are parked: nothing touches guest memory or device state until
    /// <see cref="Resume"/> (kicks and TAP frames that arrive meanwhile wait).</summary>
    public void Pause()
    {
        lock (_stateLock)
        {
            if (IsPaused || _stop is not null) return;
            _pauseGate.RequestPause(_runners.Count);
            if (!_started)
            {
                // Not running yet: the vCPU threads will park as soon as they start.
                IsPaused = true;
                return;
            }
            foreach (var runner in _runners) runner.Kick();
            if (!_pauseGate.WaitUntilParked(TimeSpan.FromSeconds(10)))
                throw new InvalidOperationException("the vCPUs did not stop within 10 s");
            _eventLoop.Pause();
            IsPaused = true;
        }
    }

    /// <summary>The state of every vCPU, the in-kernel platform devices and vmm's devices. The VM must be
    /// paused (RAM is not included: see <see cref="Memory"/>).</summary>
    public MachineState SaveState()
    {
        lock (_stateLock)
        {
            if (!IsPaused) throw new InvalidOperationException("the VM must be paused to save its state");
            return new MachineState
            {
                Description = Description,
                Vcpus = _vcpus.Select(v => VcpuState.Capture(v, _stateSupport)).ToArray(),
                Platform = PlatformState.Capture(_vm),
                Serial = Serial.SaveState(),
                I8042 = _i8042.SaveState(),
                Cmos = _cmos.SaveState(),
                Virtio = _virtio.Transports.Select(t => t.SaveState()).ToArray(),
            };
        }
    }

    /// <summary>Loads a saved state into a machine built by <see cref="CreateForRestore"/> (RAM already in
    /// place), before <see cref="Run"/>. Queues that may have had work waiting are kicked once, so requests
    /// the source had not yet seen are served.</summary>
    public void RestoreState(MachineState state)
    {
        if (!state.Description.SameAs(Description))
            throw new StateFormatException("the saved state describes a different machine (memory, vCPUs or devices) than the one built for it");
        var transports = _virtio.Transports;
        for (int i = 0; i < transports.Count; i++) transports[i].RestoreState(state.Virtio[i]);
        Serial.RestoreState(state.Serial);
        _i8042.RestoreState(state.I8042);
        _cmos.RestoreState(state.Cmos);
        state.Platform.Restore(_vm);
        for (int i = 0; i < _vcpus.Count; i++)
        {
            state.Vcpus[i].Restore(_vcpus[i], _stateSupport);
            _vcpus[i].NotifyGuestStopped();
        }
        _virtio.KickAllQueues();
    }

    /// <summary>Flushes every disk image to storage; with the VM paused, the images then hold all it wrote.</summary>
    public void FlushDisks()
    {
        foreach (var transport in _virtio.Transports)
            if (transport.Device is VirtioBlock block) block.FlushToStorage();
    }

    /// <summary>Auto-converge: the share of time (0-99%) taken from every vCPU.</summary>
    public int ThrottlePercent
    {
        get => _throttle.Percent;
        set => _throttle.Set(value);
    }

    public void Resume()
    {
        lock (_stateLock)
        {
            if (!IsPaused) return;
            foreach (var vcpu in _vcpus) vcpu.NotifyGuestStopped();
            _eventLoop.Resume();
            _pauseGate.Release();
            IsPaused = false;
        }
    }

    private void DisposeKvmObjects()
    {
        _throttle?.Dispose();
        _eventLoop.Dispose();
        _virtio.Dispose();
        foreach (var ring in _dirtyRings) ring.Dispose();
        foreach (var vcpu in _vcpus) vcpu.Dispose();
        _vm.Dispose();
        _memory?.Dispose();
    }

    public void Dispose()
    {
        DisposeKvmObjects();
        _kvm.Dispose();
        _stopped.Dispose();
        _pauseGate.Dispose();
    }
}
