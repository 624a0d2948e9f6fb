namespace Vmm.Vm;

/// <summary>The process exit codes of <c>vmm run</c>. Guest exit-port codes are always odd
/// ((value &lt;&lt; 1) | 1, QEMU's isa-debug-exit convention), so vmm's own codes are even.</summary>
public static class ExitCodes
{
    /// <summary>The guest reset or powered off, or the VM was migrated to another host.</summary>
    public const int GuestFinished = 0;
    /// <summary>vmm could not start or run the VM: bad arguments, a missing file, KVM unavailable, a host
    /// resource that failed.</summary>
    public const int VmmError = 2;
    /// <summary>The VM crashed: the guest (triple fault, failed VM entry, an exit vmm cannot continue from), or
    /// vmm itself (an internal error on one of the VM's threads). A report goes to stderr.</summary>
    public const int Crash = 4;
    /// <summary>KVM could not emulate a guest instruction and vmm could not handle it exactly.</summary>
    public const int EmulationFailure = 6;
    /// <summary>Stopped by a signal: 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as shells do.</summary>
    public static int Signal(int signalNumber) => 128 + signalNumber;
    /// <summary>The guest wrote <paramref name="value"/> to the exit port.</summary>
    public static int FromExitPort(uint value) => (int)(((value << 1) | 1) & 0xff);
}
