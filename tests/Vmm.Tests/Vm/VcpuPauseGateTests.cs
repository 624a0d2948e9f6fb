using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Vm;

public sealed class VcpuPauseGateTests
{
    [Fact]
    public async Task APauseReleasedWhileWaiting_StopsWaiting_ForVcpusThatWillNotPark()
    {
        // The VM stopping releases the gate: its vCPUs exit instead of parking, and the pause must not wait them out.
        var gate = new VcpuPauseGate();
        gate.RequestPause();
        var waiting = Task.Run(() => gate.WaitUntilParked(1, TimeSpan.FromMinutes(5)));
        gate.Release();
        // Five minutes of waiting otherwise: the WaitAsync limit fails the test long before.
        Assert.False(await waiting.WaitAsync(TimeSpan.FromMinutes(1)));
    }

    [Fact]
    public async Task AParkedVcpu_CompletesThePause_AndRunsOnAtTheRelease()
    {
        var gate = new VcpuPauseGate();
        gate.RequestPause();
        var vcpu = Task.Run(gate.Park);
        Assert.True(gate.WaitUntilParked(1, TimeSpan.FromMinutes(1)));
        Assert.False(vcpu.IsCompleted);
        gate.Release();
        await vcpu;
    }
}
