using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Vm;

public sealed class VmStopTests
{
    [Fact]
    public void VmStop_ResetFinishesWithZero()
    {
        var stop = VmStop.Reset("triple fault reboot");
        Assert.Equal(new VmStop(VmStopKind.GuestReset, 0, "guest reset (triple fault reboot)"), stop);
    }

    [Fact]
    public void VmStop_PowerOffFinishesWithZero()
    {
        var stop = VmStop.PowerOff("ACPI");
        Assert.Equal(new VmStop(VmStopKind.GuestPowerOff, 0, "guest powered off (ACPI)"), stop);
    }

    [Fact]
    public void VmStop_ExitPortCarriesOddCodeAndValue()
    {
        var stop = VmStop.ExitPort(0x2a);
        Assert.Equal(VmStopKind.GuestExitPort, stop.Kind);
        Assert.Equal(0x55, stop.ExitCode);
        Assert.Equal("guest wrote 0x2a to the exit port", stop.Description);
    }

    [Fact]
    public void VmStop_CrashIsFourWithReport()
    {
        var stop = VmStop.Crash("triple fault at rip=0x1000");
        Assert.Equal(new VmStop(VmStopKind.GuestCrash, 4, "triple fault at rip=0x1000"), stop);
    }

    [Fact]
    public void VmStop_EmulationFailureIsSix()
    {
        var stop = VmStop.Emulation("cannot emulate");
        Assert.Equal(new VmStop(VmStopKind.EmulationFailure, 6, "cannot emulate"), stop);
    }

    [Fact]
    public void VmStop_ErrorIsTwo()
    {
        var stop = VmStop.Error("KVM_RUN failed");
        Assert.Equal(new VmStop(VmStopKind.VmmError, 2, "KVM_RUN failed"), stop);
    }

    [Fact]
    public void VmStop_SignalIs128PlusNumber()
    {
        var stop = VmStop.BySignal("SIGTERM", 15);
        Assert.Equal(new VmStop(VmStopKind.Signal, 143, "stopped by SIGTERM"), stop);
        Assert.Equal(130, VmStop.BySignal("SIGINT", 2).ExitCode);
    }
}
