namespace Vmm.Vm;

public enum VmStopKind
{
    GuestReset,
    GuestPowerOff,
    GuestExitPort,
    GuestCrash,
    EmulationFailure,
    VmmError,
    Signal,
    UserQuit,
    MigratedAway,
}

/// <summary>Why the VM stopped, the process exit code that goes with it, and (for crashes) the report.</summary>
public sealed record VmStop(VmStopKind Kind, int ExitCode, string Description)
{
    public static VmStop Reset(string how) => new(VmStopKind.GuestReset, ExitCodes.GuestFinished, $"guest reset ({how})");
    public static VmStop PowerOff(string how) => new(VmStopKind.GuestPowerOff, ExitCodes.GuestFinished, $"guest powered off ({how})");
    public static VmStop ExitPort(uint value) =>
        new(VmStopKind.GuestExitPort, ExitCodes.FromExitPort(value), $"guest wrote 0x{value:x} to the exit port");
    public static VmStop Crash(string report) => new(VmStopKind.GuestCrash, ExitCodes.GuestCrash, report);
    public static VmStop Emulation(string report) => new(VmStopKind.EmulationFailure, ExitCodes.EmulationFailure, report);
    public static VmStop Error(string message) => new(VmStopKind.VmmError, ExitCodes.VmmError, message);
    public static VmStop Migrated(string target) => new(VmStopKind.MigratedAway, ExitCodes.GuestFinished, $"the VM now runs on {target} (migrated)");
    public static VmStop BySignal(string name, int number) => new(VmStopKind.Signal, ExitCodes.Signal(number), $"stopped by {name}");
}
