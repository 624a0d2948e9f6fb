using Vmm.Devices.Virtio;
using Vmm.Diagnostics;
using Vmm.Kvm;
using Vmm.Memory;
using Xunit;
using static Vmm.Devices.Virtio.VirtioMmioTransport;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>The transport-independent virtio rules, driven through the MMIO registers: device work never holds
/// up a register access, and a device that fails (its backend, not the guest) needs a reset while the VM runs on.</summary>
public sealed class VirtioStatusMachineTests : IDisposable
{
    private readonly GuestMemory _memory = GuestMemory.Allocate([(0, 4UL << 20)]);
    private readonly CountingInterruptLine _interrupt = new();
    private readonly StringWriter _log = new();
    private readonly ScriptedDevice _device = new();
    private readonly VirtioMmioTransport _transport;
    private readonly MmioDriver _driver;

    public VirtioStatusMachineTests()
    {
        _transport = new VirtioMmioTransport("scripted", _device, _memory, _interrupt, new Logger(_log, LogLevel.Debug));
        _driver = new MmioDriver(_transport, _memory);
    }

    public void Dispose() => _memory.Dispose();

    /// <summary>A device whose activation and queue work do what the test says.</summary>
    private sealed class ScriptedDevice : IVirtioDevice
    {
        public Action OnActivate { get; set; } = () => { };
        public Action OnProcessQueue { get; set; } = () => { };
        public Action OnReset { get; set; } = () => { };
        public VirtioDeviceType Type => VirtioDeviceType.Block;
        public ulong OfferedFeatures => VirtioFeatures.Common;
        public IReadOnlyList<ushort> QueueMaxSizes { get; } = [16];
        public void ReadConfig(int offset, Span<byte> data) => data.Fill(0x42);
        public void WriteConfig(int offset, ReadOnlySpan<byte> data) { }
        public void Activate(VirtioActivation activation) => OnActivate();
        public void ProcessQueue(int index) => OnProcessQueue();
        public void Reset() => OnReset();
    }

    [Fact]
    public async Task RegisterAccesses_DoNotWaitForDeviceWorkInProgress()
    {
        using var entered = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        _device.OnProcessQueue = () =>
        {
            entered.Set();
            release.Wait(); // a flush to a disk that hangs (NFS)
        };
        _driver.Initialize(VirtioFeatures.Version1, 16);
        var kick = Task.Run(() => _transport.Notify(0));
        Assert.True(entered.Wait(TimeSpan.FromSeconds(10)));
        try
        {
            // What a vCPU does meanwhile: the interrupt handler's status read and ACK, a config read.
            var reads = Task.Run(() =>
            {
                _driver.AcknowledgeInterrupt();
                _driver.ReadConfig(0, 8);
                return _driver.Status;
            });
            uint status = await reads.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(StatusAcknowledge | StatusDriver | StatusFeaturesOk | StatusDriverOk, status);
        }
        finally
        {
            release.Set();
            await kick;
        }
    }

    [Fact]
    public async Task AReset_WaitsForDeviceWorkInProgress()
    {
        using var entered = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        using var resetStarting = new ManualResetEventSlim();
        int step = 0, workEnded = 0, deviceReset = 0;
        _device.OnProcessQueue = () =>
        {
            entered.Set();
            release.Wait();
            workEnded = Interlocked.Increment(ref step);
        };
        _device.OnReset = () => deviceReset = Interlocked.Increment(ref step);
        _driver.Initialize(VirtioFeatures.Version1, 16);
        var kick = Task.Run(() => _transport.Notify(0));
        Assert.True(entered.Wait(TimeSpan.FromSeconds(10)));

        // The driver may reuse the rings as soon as its reset write returns: the device must be done with them.
        var reset = Task.Run(() =>
        {
            resetStarting.Set();
            _driver.Reset();
        });
        resetStarting.Wait();
        release.Set();
        await reset.WaitAsync(TimeSpan.FromSeconds(30));
        await kick;

        Assert.True(workEnded > 0 && deviceReset > workEnded, $"work ended at step {workEnded}, the device was reset at step {deviceReset}");
        Assert.Equal(0u, _driver.Status);
    }

    [Fact]
    public void ADeviceThatCannotStart_NeedsAResetAndTheVcpuGoesOn()
    {
        // TapDevice.SetOffloads failing when the driver sets DRIVER_OK.
        _device.OnActivate = () => throw new PosixException("TUNSETOFFLOAD", 5, "TAP tap0");

        _driver.Initialize(VirtioFeatures.Version1, 16);

        Assert.NotEqual(0u, _driver.Status & StatusDeviceNeedsReset);
        Assert.Equal(InterruptConfigChange, _driver.InterruptStatus & InterruptConfigChange);
        Assert.Equal(1, _interrupt.Triggers);
        Assert.Contains("cannot start the device: TUNSETOFFLOAD failed", _log.ToString());
    }

    [Fact]
    public void DeviceWorkThatFailsOnTheHost_NeedsAResetAndTheDeviceThreadGoesOn()
    {
        _device.OnProcessQueue = () => throw new PosixException("writev", 105, "TAP tap0");
        _driver.Initialize(VirtioFeatures.Version1, 16);

        _transport.Notify(0);

        Assert.NotEqual(0u, _driver.Status & StatusDeviceNeedsReset);
        // A reset brings the device back.
        _device.OnProcessQueue = () => { };
        _driver.Initialize(VirtioFeatures.Version1, 16);
        Assert.Equal(0u, _driver.Status & StatusDeviceNeedsReset);
    }

    [Fact]
    public void ABugInDeviceWork_EscapesToTheDeviceThreadsBoundary()
    {
        _device.OnProcessQueue = () => throw new InvalidOperationException("a bug");
        _driver.Initialize(VirtioFeatures.Version1, 16);

        Assert.Throws<InvalidOperationException>(() => _transport.Notify(0));
    }

    [Fact]
    public void AGuestThatBreaksTheDeviceInALoop_CostsAFewLogLines()
    {
        _device.OnActivate = () => throw new PosixException("TUNSETOFFLOAD", 5, "TAP tap0");
        for (int i = 0; i < 1000; i++) _driver.Initialize(VirtioFeatures.Version1, 16);

        int lines = _log.ToString().Split('\n').Count(l => l.Contains("cannot start the device"));
        Assert.InRange(lines, 1, 20);
    }
}
