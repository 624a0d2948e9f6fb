using Vmm.Devices;
using Vmm.Kvm;
using Vmm.Memory;

namespace Vmm.Vm;

/// <summary>One vCPU's thread: KVM_RUN in a loop, each exit dispatched to the port or MMIO bus, and the
/// exits that end the VM turned into a <see cref="VmStop"/> with a report. The thread is a failure boundary:
/// whatever escapes the loop stops this VM (<see cref="VmStop.FromFailure"/>), never the process.</summary>
internal sealed class VcpuRunner(
    KvmVcpu vcpu, DeviceBus ioPorts, DeviceBus mmio, GuestMemory memory, Action<VmStop> requestStop,
    Func<bool> stopRequested, VcpuPauseGate pauseGate, Func<TimeSpan> throttleSleep, Action onDirtyRingFull, bool handleNestedEmulationFailures)
{
    private const uint SystemEventShutdown = 1, SystemEventReset = 2, SystemEventCrash = 3;

    private Thread? _thread;
    private nuint _pthread;
    private int _throttleSleepDue;

    public void Start()
    {
        VcpuKick.EnsureHandlerInstalled();
        _thread = new Thread(Loop) { Name = $"vcpu{vcpu.Index}", IsBackground = true };
        _thread.Start();
    }

    /// <summary>Makes a running KVM_RUN return, and one about to start return at once.</summary>
    public void Kick()
    {
        vcpu.RunPage.ImmediateExit = true;
        VcpuKick.Signal(Volatile.Read(ref _pthread));
    }

    public void Join() => _thread?.Join();

    /// <summary>Auto-converge: the vCPU sleeps once for the throttle's share of time, then runs on.</summary>
    public void RequestThrottleSleep()
    {
        Volatile.Write(ref _throttleSleepDue, 1);
        Kick();
    }

    private void Loop()
    {
        Volatile.Write(ref _pthread, Kvm.Interop.Libc.PthreadSelf());
        try
        {
            while (true)
            {
                // Whoever kicks sets its condition first, then immediate_exit: cleared here, before the
                // conditions are read (the fence keeps that order), a kick is either seen below or makes
                // the next KVM_RUN return at once.
                vcpu.RunPage.ImmediateExit = false;
                Interlocked.MemoryBarrier();
                if (stopRequested()) break;
                if (pauseGate.PauseRequested)
                {
                    CompletePendingExit();
                    pauseGate.Park();
                    continue;
                }
                if (Interlocked.Exchange(ref _throttleSleepDue, 0) == 1)
                {
                    Thread.Sleep(throttleSleep());
                    continue;
                }
                if (!vcpu.Run()) continue;
                if (HandleExit() is { } stop) requestStop(stop);
            }
        }
        catch (Exception e)
        {
            requestStop(VmStop.FromFailure($"vCPU {vcpu.Index}", e));
        }
        finally
        {
            Volatile.Write(ref _pthread, 0);
        }
    }

    /// <summary>KVM finishes an I/O or MMIO exit (a port read's value lands in RAX) only on the next
    /// KVM_RUN; with immediate_exit set that call does just this and returns. Without it a paused vCPU's
    /// saved state would lose the read.</summary>
    private void CompletePendingExit()
    {
        vcpu.RunPage.ImmediateExit = true;
        vcpu.Run();
    }

    /// <summary>Handles one exit; returns a stop when the VM cannot go on.</summary>
    private VmStop? HandleExit()
    {
        var run = vcpu.RunPage;
        switch (run.ExitReason)
        {
            case KvmExitReason.Io:
                HandlePortIo(run);
                return null;
            case KvmExitReason.Mmio:
                if (run.MmioIsWrite) mmio.Write(run.MmioAddress, run.MmioData);
                else mmio.Read(run.MmioAddress, run.MmioData);
                return null;
            case KvmExitReason.Intr:
            case KvmExitReason.IrqWindowOpen:
                return null;
            case KvmExitReason.DirtyRingFull:
                onDirtyRingFull();
                return null;
            case KvmExitReason.Hlt:
                return VmStop.PowerOff("vCPU halted with nothing left to wake it");
            case KvmExitReason.Shutdown:
                return VmStop.Crash(FaultReport.Build("guest crash: triple fault (KVM_EXIT_SHUTDOWN)", vcpu, memory));
            case KvmExitReason.SystemEvent:
                return run.SystemEventType switch
                {
                    SystemEventShutdown => VmStop.PowerOff("KVM system event: shutdown"),
                    SystemEventReset => VmStop.Reset("KVM system event: reset"),
                    SystemEventCrash => VmStop.Crash(FaultReport.Build("guest crash: KVM system event: crash", vcpu, memory)),
                    var type => VmStop.Crash(FaultReport.Build($"guest stopped: unknown KVM system event {type}", vcpu, memory)),
                };
            case KvmExitReason.InternalError:
                return HandleInternalError(run);
            case KvmExitReason.FailEntry:
                return VmStop.Crash(FaultReport.Build(
                    $"guest crash: VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason 0x{run.HardwareReason:x})", vcpu, memory));
            default:
                return VmStop.Crash(FaultReport.Build(
                    $"guest stopped: unexpected exit {run.ExitReason} ({(uint)run.ExitReason})", vcpu, memory));
        }
    }

    private void HandlePortIo(KvmRunPage run)
    {
        Span<byte> data = run.IoData;
        int size = run.IoSize;
        ushort port = run.IoPort;
        // A rep ins/outs arrives as one exit with count elements.
        for (int offset = 0; offset < data.Length; offset += size)
        {
            Span<byte> element = data.Slice(offset, size);
            if (run.IoIsWrite) ioPorts.Write(port, element);
            else ioPorts.Read(port, element);
        }
    }

    private VmStop? HandleInternalError(KvmRunPage run)
    {
        const uint EmulationFailure = 1;
        if (run.InternalSuberror != EmulationFailure)
        {
            string data = string.Join(' ', run.InternalData.ToArray().Select(d => $"0x{d:x}"));
            return VmStop.Crash(FaultReport.Build(
                $"guest stopped: KVM internal error, suberror {run.InternalSuberror} (data: {data})", vcpu, memory));
        }
        byte[] instruction = run.EmulationFailureInstructionBytes.ToArray();
        var sregs = vcpu.GetSregs();
        int bitness = FaultReport.Bitness(sregs);
        if (instruction.Length == 0)
        {
            var regs = vcpu.GetRegs();
            instruction = FaultReport.ReadCode(vcpu, memory, bitness == 64 ? regs.Rip : sregs.Cs.Base + regs.Rip);
        }
        if (handleNestedEmulationFailures && EmulationFailureHandler.TryHandle(vcpu, instruction, bitness))
            return null;
        return VmStop.Emulation(FaultReport.Build(
            "emulation failure: KVM could not emulate the instruction at RIP (KVM_EXIT_INTERNAL_ERROR, suberror 1)", vcpu, memory, instruction));
    }
}
