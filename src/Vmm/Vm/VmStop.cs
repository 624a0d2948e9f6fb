namespace Vmm.Vm;

public enum VmStopKind
{
    GuestReset,
    GuestPowerOff,
    GuestExitPort,
    GuestCrash,
    EmulationFailure,
    VmmError,
    InternalError,
    Signal,
    UserQuit,
    MigratedAway,
    HandedOver,
    StopRequested,
}

/// <summary>Why the VM stopped, the process exit code that goes with it, and (for crashes) the report.</summary>
public sealed record VmStop(VmStopKind Kind, int ExitCode, string Description)
{
    public static VmStop Reset(string how) => new(VmStopKind.GuestReset, ExitCodes.GuestFinished, $"guest reset ({how})");
    public static VmStop PowerOff(string how) => new(VmStopKind.GuestPowerOff, ExitCodes.GuestFinished, $"guest powered off ({how})");
    public static VmStop ExitPort(uint value) =>
        new(VmStopKind.GuestExitPort, ExitCodes.FromExitPort(value), $"guest wrote 0x{value:x} to the exit port");
    public static VmStop Crash(string report) => new(VmStopKind.GuestCrash, ExitCodes.Crash, report);
    public static VmStop Emulation(string report) => new(VmStopKind.EmulationFailure, ExitCodes.EmulationFailure, report);
    public static VmStop Error(string message) => new(VmStopKind.VmmError, ExitCodes.VmmError, message);
    public static VmStop Migrated(string target) => new(VmStopKind.MigratedAway, ExitCodes.GuestFinished, $"the VM now runs on {target} (migrated)");
    /// <summary>A planned replication handover: the standby holds the VM's last epoch and resumes it from there.</summary>
    public static VmStop HandedOver(string standby) => new(VmStopKind.HandedOver, ExitCodes.GuestFinished, $"the VM was handed over to the standby {standby}");
    public static VmStop BySignal(string name, int number) => new(VmStopKind.Signal, ExitCodes.Signal(number), $"stopped by {name}");
    /// <summary>A stop asked for on the control socket: a clean end, like Ctrl-A x, for a VM that may share its process with
    /// others (in a migrate-receive daemon) and so has no signal of its own.</summary>
    public static VmStop Requested(string by) => new(VmStopKind.StopRequested, ExitCodes.GuestFinished, $"stopped by {by}");

    /// <summary>What a failure on one of the VM's threads means for the VM: an expected one (a host resource
    /// failed, KVM refused) stops it as a vmm error with its message; anything else is a bug in vmm, which
    /// stops the VM as crashed, with the exception and its stack for the report.</summary>
    public static VmStop FromFailure(string where, Exception failure) => failure is VmmException
        ? Error($"{where}: {failure.Message}")
        : new(VmStopKind.InternalError, ExitCodes.Crash, $"internal error in vmm ({where}); please report it:\n{failure}");
}
