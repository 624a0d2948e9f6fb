using Vmm.Devices;
using Vmm.Firmware;
using Vmm.Kvm;
using Vmm.Tests.Integration;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Vm;

/// <summary>A vCPU thread is a failure boundary: whatever a device throws on it stops that VM with a reason
/// and an exit code, never the process; and a pause that cannot complete leaves the VM running.</summary>
public sealed class VcpuFailureBoundaryTests : IDisposable
{
    private const ushort TestPort = 0x510;
    private readonly FirmwareGuestRunner _runner = new();

    public void Dispose() => _runner.Dispose();

    private sealed class ThrowingDevice(Exception failure) : IBusDevice
    {
        public void Read(ulong offset, Span<byte> data) => data.Fill(0xff);
        public void Write(ulong offset, ReadOnlySpan<byte> data) => throw failure;
    }

    [Fact]
    public void AHostFailureInADevice_StopsTheVmAsAVmmErrorWithItsMessage()
    {
        // What TapDevice.SetOffloads or EventFd.Signal throw: an expected failure of the host, not a bug.
        var result = _runner.Run(FirmwareGuests.WritePortThenExit(TestPort, 1, FirmwareGuests.ExitValueSuccess),
            prepare: m => m.IoPorts.Register(TestPort, 1, new ThrowingDevice(new PosixException("TUNSETOFFLOAD", 19, "TAP tap0"))));

        Assert.Equal(VmStopKind.VmmError, result.Stop.Kind);
        Assert.Equal(ExitCodes.VmmError, result.Stop.ExitCode);
        Assert.Contains("vCPU 0: TUNSETOFFLOAD failed", result.Stop.Description);
    }

    [Fact]
    public void AnUnexpectedExceptionInADevice_StopsTheVmAsCrashedWithTheException()
    {
        var result = _runner.Run(FirmwareGuests.WritePortThenExit(TestPort, 1, FirmwareGuests.ExitValueSuccess),
            prepare: m => m.IoPorts.Register(TestPort, 1, new ThrowingDevice(new InvalidOperationException("a bug in a device"))));

        Assert.Equal(VmStopKind.InternalError, result.Stop.Kind);
        Assert.Equal(ExitCodes.Crash, result.Stop.ExitCode);
        Assert.Contains("internal error in vmm (vCPU 0)", result.Stop.Description);
        Assert.Contains("a bug in a device", result.Stop.Description);
        Assert.Contains("ThrowingDevice.Write", result.Stop.Description);
    }

    /// <summary>Holds the vCPU that writes it until the test lets go: a device waiting for a slow backend.</summary>
    private sealed class BlockingDevice : IBusDevice
    {
        public ManualResetEventSlim Entered { get; } = new();
        public ManualResetEventSlim Release { get; } = new();
        public void Read(ulong offset, Span<byte> data) => data.Fill(0xff);

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            Entered.Set();
            Release.Wait();
        }
    }

    [Fact]
    public void APauseThatTimesOut_LeavesTheVmRunningAndResumable()
    {
        var device = new BlockingDevice();
        var result = _runner.Run(FirmwareGuests.WritePortThenExit(TestPort, 1, FirmwareGuests.ExitValueSuccess), prepare: machine =>
        {
            machine.IoPorts.Register(TestPort, 1, device);
            Task.Run(() =>
            {
                Assert.True(device.Entered.Wait(TimeSpan.FromSeconds(60)));
                // The vCPU is inside the device, so it cannot stop: the pause must give up, certainly.
                var failure = Assert.Throws<VmOperationException>(() => machine.Pause(TimeSpan.FromMilliseconds(100)));
                Assert.Contains("did not stop within", failure.Message);
                Assert.False(machine.IsPaused);
                device.Release.Set();
            });
        });

        // Had the pause left its gate closed, the vCPU would park on leaving the device and never reach the exit port.
        Assert.Equal(VmStopKind.GuestExitPort, result.Stop.Kind);
        Assert.Equal(ExitCodes.FromExitPort(FirmwareGuests.ExitValueSuccess), result.Stop.ExitCode);
    }

    [Fact]
    public async Task AfterAPauseThatTimedOut_ALaterPauseAndResumeWork()
    {
        var device = new BlockingDevice();
        string kernel = _runner.WriteImage(FirmwareGuests.WritePortThenCountForever(TestPort, 1));
        using var machine = MachineBuilder.Boot(new MachineConfig { KernelPath = kernel, MemoryBytes = 64UL << 20, SerialOutput = Stream.Null },
            new Vmm.Diagnostics.Logger(TextWriter.Null, Vmm.Diagnostics.LogLevel.Debug));
        machine.IoPorts.Register(TestPort, 1, device);
        var run = Task.Run(machine.Run);
        try
        {
            Assert.True(device.Entered.Wait(TimeSpan.FromSeconds(60)));
            Assert.Throws<VmOperationException>(() => machine.Pause(TimeSpan.FromMilliseconds(50)));
            device.Release.Set();

            // The vCPU that was late for the first pause counts for this one, and only once.
            machine.Pause();
            Assert.True(machine.IsPaused);
            ulong counter = machine.Memory.Read<ulong>(FirmwareGuests.CounterAddress);
            Assert.Equal(counter, machine.Memory.Read<ulong>(FirmwareGuests.CounterAddress));
            machine.Resume();
            Assert.True(SpinWait.SpinUntil(() => machine.Memory.Read<ulong>(FirmwareGuests.CounterAddress) > counter, TimeSpan.FromSeconds(60)));
        }
        finally
        {
            machine.RequestStop(VmStop.Error("test over"));
            await run;
        }
    }
}
