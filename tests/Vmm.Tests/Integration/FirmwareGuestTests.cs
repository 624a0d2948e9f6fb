using Vmm.Firmware;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Integration;

/// <summary>Tiny guests on real KVM: each checks one path of the vCPU loop end to end.</summary>
public sealed class FirmwareGuestTests : IDisposable
{
    private readonly FirmwareGuestRunner _runner = new();

    public void Dispose() => _runner.Dispose();

    [Fact]
    public void PrintThenReset_ShowsTheMessageOnTheConsoleAndStopsWithResetExitCode()
    {
        var result = _runner.Run(FirmwareGuests.PrintThenReset("hello from firmware\n"));

        Assert.Equal("hello from firmware\n", result.Console);
        Assert.Equal(VmStopKind.GuestReset, result.Stop.Kind);
        Assert.Equal(0, result.Stop.ExitCode);
    }

    [Fact]
    public void SeveralVcpus_ApplicationProcessorsWaitingForStartup_StopCleanlyWithTheVm()
    {
        // Only the boot CPU runs firmware; the others sit in KVM_RUN waiting for INIT/SIPI and must still
        // be kicked out and joined when the VM stops.
        var result = _runner.Run(FirmwareGuests.PrintThenReset("four cpus\n"), c => c with { VcpuCount = 4 });

        Assert.Equal("four cpus\n", result.Console);
        Assert.Equal(VmStopKind.GuestReset, result.Stop.Kind);
    }

    [Fact]
    public void ExitPort_EndsTheVmWithTheGuestsCode()
    {
        var result = _runner.Run(FirmwareGuests.BootTimerThenExit(0x21));

        Assert.Equal(VmStopKind.GuestExitPort, result.Stop.Kind);
        Assert.Equal((0x21 << 1) | 1, result.Stop.ExitCode);
        Assert.Contains("boot timer: guest mark 1 at", result.Log);
    }

    [Fact]
    public void TripleFault_StopsAsGuestCrashWithRegistersAndDisassembly()
    {
        var result = _runner.Run(FirmwareGuests.TripleFault());

        Assert.Equal(VmStopKind.GuestCrash, result.Stop.Kind);
        Assert.Equal(ExitCodes.Crash, result.Stop.ExitCode);
        Assert.Contains("triple fault", result.Stop.Description);
        Assert.Contains("rip 0000000000100000", result.Stop.Description);
        Assert.Contains("ud2", result.Stop.Description);
    }

    [Fact]
    public void UnclaimedMmioAndPorts_ReadAllOnesAndAreLoggedOnce()
    {
        var result = _runner.Run(FirmwareGuests.ProbeUnclaimedMmioAndPort());

        Assert.Equal(ExitCodes.FromExitPort(FirmwareGuests.ExitValueSuccess), result.Stop.ExitCode);
        Assert.Contains($"unhandled MMIO read at 0x{FirmwareGuests.UnclaimedMmioAddress:x}", result.Log);
        Assert.Contains($"unhandled MMIO write at 0x{FirmwareGuests.UnclaimedMmioAddress:x}", result.Log);
        Assert.Contains("unhandled port read at 0x2ff", result.Log);
    }

    [Fact]
    public void InstructionFetchFromMmio_StopsWithAReportNamingTheAddress()
    {
        var result = _runner.Run(FirmwareGuests.JumpOutsideRam());

        Assert.Equal(VmStopKind.EmulationFailure, result.Stop.Kind);
        Assert.Equal(ExitCodes.EmulationFailure, result.Stop.ExitCode);
        Assert.Contains($"rip 00000000{FirmwareGuests.UnclaimedMmioAddress:x8}", result.Stop.Description);
        Assert.Contains("not mapped to guest RAM", result.Stop.Description);
    }

    [Fact]
    public void UnemulatableInstruction_StopsWithEmulationFailureAndDisassembledInstruction()
    {
        var result = _runner.Run(FirmwareGuests.PopcntOnMmio());

        Assert.Equal(VmStopKind.EmulationFailure, result.Stop.Kind);
        Assert.Equal(ExitCodes.EmulationFailure, result.Stop.ExitCode);
        Assert.Matches(@"code at rip \(linear 0x100005, 64-bit\): f3 48 0f b8 07  popcnt rax,\[rdi\]", result.Stop.Description);
    }

    [Fact]
    public void Int3_ReachesTheGuestsBreakpointHandler()
    {
        var result = _runner.Run(FirmwareGuests.BreakpointHandledByGuest(0x13));

        Assert.Equal(ExitCodes.FromExitPort(0x13), result.Stop.ExitCode);
    }

    [Fact]
    public void Fwait_WithNoPendingX87Exception_RunsOn()
    {
        var result = _runner.Run(FirmwareGuests.FwaitThenExit(0x14));

        Assert.Equal(ExitCodes.FromExitPort(0x14), result.Stop.ExitCode);
    }

    [Fact]
    public void Int3_OnTheNestedBackendWithoutWorkarounds_IsAnEmulationFailure()
    {
        if (!NestedKvm.IsActiveOnThisHost())
        {
            // On hardware KVM int3 never reaches the emulator; there is nothing to turn off.
            var hardware = _runner.Run(FirmwareGuests.BreakpointHandledByGuest(0x13), c => c with { NestedKvmWorkarounds = false });
            Assert.Equal(ExitCodes.FromExitPort(0x13), hardware.Stop.ExitCode);
            return;
        }
        var result = _runner.Run(FirmwareGuests.BreakpointHandledByGuest(0x13), c => c with { NestedKvmWorkarounds = false });

        Assert.Equal(VmStopKind.EmulationFailure, result.Stop.Kind);
        Assert.Contains("int3", result.Stop.Description);
    }
}
