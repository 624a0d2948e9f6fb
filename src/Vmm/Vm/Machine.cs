using Vmm.Boot;
using Vmm.Devices;
using Vmm.Diagnostics;
using Vmm.Kvm;
using Vmm.Kvm.Interop;
using Vmm.Memory;

namespace Vmm.Vm;

/// <summary>A built VM, running and controlled: its vCPU threads and device thread, pause and resume, the
/// auto-converge throttle and dirty-page tracking. <see cref="MachineBuilder"/> makes one; the State layer
/// saves and restores it through <see cref="Devices"/>, <see cref="Vcpus"/> and <see cref="KvmVm"/>.</summary>
public sealed class Machine : IDisposable
{
    private static readonly TimeSpan DefaultPauseTimeout = TimeSpan.FromSeconds(10);

    private readonly MachineParts _parts;
    private readonly List<VcpuRunner> _runners = [];
    private readonly VcpuPauseGate _pauseGate = new();
    private readonly object _stateLock = new();
    private readonly DateTime _startedUtc = DateTime.UtcNow;
    private readonly VcpuThrottle _throttle;
    private DirtyPageTracker? _tracker;
    private long _dirtyRingFullExits;
    private bool _started;

    internal Machine(MachineParts parts)
    {
        _parts = parts;
        _throttle = new VcpuThrottle(_runners);
        foreach (var vcpu in parts.Vcpus)
            _runners.Add(new VcpuRunner(vcpu, parts.IoPorts, parts.Mmio, parts.Memory, RequestStop, () => parts.Stop.Reason is not null,
                _pauseGate, () => _throttle.SleepPerSlice, OnDirtyRingFull, parts.HandleNestedEmulationFailures));
        parts.Stop.Token.Register(OnStopRequested);
    }

    public MachineConfig Config => _parts.Config;
    public GuestMemory Memory => _parts.Memory;
    public DeviceBus IoPorts => _parts.IoPorts;
    public DeviceBus Mmio => _parts.Mmio;
    public Serial8250 Serial => _parts.Serial;
    /// <summary>The guest's output to the outside world (console, network), held per epoch while replicated.</summary>
    public GuestOutputGate Output => _parts.Output;
    /// <summary>How the kernel was loaded; null for a machine built to take a saved state.</summary>
    public BootSetup? Boot => _parts.Boot;
    /// <summary>Every device with state, in a fixed order: what snapshots, migration and replication save.</summary>
    public IReadOnlyList<IStatefulDevice> Devices => _parts.Devices;
    /// <summary>The virtio-blk disks, in the order the guest sees them: what a storage migration copies.</summary>
    public IReadOnlyList<Devices.Virtio.VirtioBlock> Disks => _parts.Disks;
    internal KvmVm KvmVm => _parts.Vm;
    internal IReadOnlyList<KvmVcpu> Vcpus => _parts.Vcpus;
    /// <summary>The CPUID each vCPU shows its guest, as KVM read it back when the VM was built: what a migration
    /// carries to its target, read here because KVM_GET_CPUID2 would wait for a vCPU in KVM_RUN.</summary>
    internal IReadOnlyList<KvmCpuidEntry2[]> VcpuCpuid => _parts.VcpuCpuid;
    internal VcpuStateSupport StateSupport => _parts.StateSupport;

    public bool IsPaused { get; private set; }
    public int VcpuCount => _runners.Count;
    public TimeSpan Uptime => DateTime.UtcNow - _startedUtc;
    /// <summary>Why the VM stopped; null while it runs (or has not started).</summary>
    public VmStop? StopReason => _parts.Stop.Reason;
    /// <summary>Cancelled the moment the VM starts to stop: work on it from outside ends with it.</summary>
    public CancellationToken Stopping => _parts.Stop.Token;

    /// <summary>Runs the vCPUs until the guest or the host stops the VM; returns why.</summary>
    public VmStop Run()
    {
        lock (_stateLock)
        {
            _parts.EventLoop.Start();
            if (IsPaused) _parts.EventLoop.Pause(Timeout.InfiniteTimeSpan);
            foreach (var runner in _runners) runner.Start();
            _started = true;
        }
        Stopping.WaitHandle.WaitOne();
        foreach (var runner in _runners) runner.Kick();
        foreach (var runner in _runners) runner.Join();
        _parts.EventLoop.Stop();
        return StopReason!;
    }

    /// <summary>Stops the VM; the first request wins.</summary>
    public void RequestStop(VmStop stop) => _parts.Stop.Request(stop);

    private void OnStopRequested()
    {
        foreach (var runner in _runners) runner.Kick();
        _pauseGate.Release();
    }

    /// <summary>Stops every vCPU between two instructions, then the device thread between two batches of
    /// events, and returns once all are parked: nothing touches guest memory or device state until
    /// <see cref="Resume"/> (kicks and TAP frames that arrive meanwhile wait). When they do not all stop within
    /// <paramref name="timeout"/> (a vCPU stuck in a device, a disk that hangs), the pause is given up and the
    /// VM runs on as before: a <see cref="VmOperationException"/> says so.</summary>
    public void Pause(TimeSpan? timeout = null)
    {
        var limit = timeout ?? DefaultPauseTimeout;
        lock (_stateLock)
        {
            if (StopReason is { } stop) throw new VmOperationException($"the VM has stopped ({stop.Description})");
            if (IsPaused) return;
            _pauseGate.RequestPause();
            if (!_started)
            {
                // Not running yet: the vCPU threads will park as soon as they start.
                IsPaused = true;
                return;
            }
            // A stop that came after the check above released the gate before this pause asked: it would wait for
            // vCPUs that exit rather than park.
            if (StopReason is { } stopping)
            {
                _pauseGate.Release();
                throw new VmOperationException($"the VM has stopped ({stopping.Description})");
            }
            foreach (var runner in _runners) runner.Kick();
            var waited = System.Diagnostics.Stopwatch.StartNew();
            if (!_pauseGate.WaitUntilParked(_runners.Count, limit))
            {
                _pauseGate.Release();
                if (StopReason is { } stopped) throw new VmOperationException($"the VM has stopped ({stopped.Description})");
                throw new VmOperationException($"the vCPUs did not stop within {limit.TotalSeconds:0.###} s (one may be waiting for a device); the VM runs on");
            }
            if (!_parts.EventLoop.Pause(TimeSpan.FromTicks(Math.Max(0, (limit - waited.Elapsed).Ticks))))
            {
                _parts.EventLoop.Resume();
                _pauseGate.Release();
                throw new VmOperationException($"the device thread did not stop within {limit.TotalSeconds:0.###} s (a device may be waiting for its backend); the VM runs on");
            }
            IsPaused = true;
        }
    }

    public void Resume()
    {
        lock (_stateLock)
        {
            if (!IsPaused) return;
            foreach (var vcpu in _parts.Vcpus) vcpu.NotifyGuestStopped();
            _parts.EventLoop.Resume();
            _pauseGate.Release();
            IsPaused = false;
        }
    }

    /// <summary>Auto-converge: the share of time (0-99%) taken from every vCPU.</summary>
    public int ThrottlePercent
    {
        get => _throttle.Percent;
        set => _throttle.Set(value);
    }

    /// <summary>After a restore: requests the source may have left in the queues are served, and kvmclock
    /// users are told the guest was stopped.</summary>
    internal void AfterRestore()
    {
        foreach (var vcpu in _parts.Vcpus) vcpu.NotifyGuestStopped();
        _parts.Virtio.KickAllQueues();
    }

    /// <summary>Starts tracking the pages the guest and the devices write, for a migration.</summary>
    internal DirtyPageTracker StartDirtyTracking()
    {
        var tracker = new DirtyPageTracker(_parts.Vm, _parts.Memory, _parts.DirtyRings.Count > 0 ? _parts.DirtyRings : null);
        Volatile.Write(ref _tracker, tracker);
        tracker.Start();
        return tracker;
    }

    internal void StopDirtyTracking(DirtyPageTracker tracker)
    {
        tracker.Stop();
        Interlocked.CompareExchange(ref _tracker, null, tracker);
    }

    /// <summary>How often a vCPU stopped because its dirty ring was full (each costs it a harvest).</summary>
    internal long DirtyRingFullExits => Interlocked.Read(ref _dirtyRingFullExits);

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
        lock (_parts.DirtyRings)
        {
            foreach (var ring in _parts.DirtyRings) ring.Harvest((_, _) => { });
            _parts.Vm.ResetDirtyRings();
        }
    }

    /// <summary>Releases the VM. One still running (its owner gave up on it: a host tearing down, a test that failed
    /// half-way) is stopped first, so that no vCPU or device thread touches guest memory, the KVM file descriptors or
    /// the stop latch after they are gone.</summary>
    public void Dispose()
    {
        if (_started)
        {
            RequestStop(VmStop.Requested("its owner releasing it"));
            foreach (var runner in _runners) runner.Join();
            _parts.EventLoop.Stop();
        }
        _throttle.Dispose();
        _parts.Dispose();
    }
}
