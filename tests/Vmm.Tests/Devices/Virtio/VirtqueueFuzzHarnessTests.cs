using Vmm.Fuzz;
using Xunit;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>The fuzz harness in-process, over the same deterministic inputs as its CI smoke run.</summary>
public sealed class VirtqueueFuzzHarnessTests
{
    [Fact]
    public void FuzzTarget_GeneratedInputs_RaiseNothingButVirtqueueException()
    {
        var rejections = new List<string>();
        long chains = 0;
        foreach (byte[] input in FuzzInputGenerator.Generate(3000, seed: 7))
        {
            var result = VirtqueueFuzzTarget.Run(input);
            chains += result.ChainsCompleted;
            if (result.Rejection is { } message) rejections.Add(message);
        }
        // The inputs reach deep: chains complete, and the rules a hostile driver breaks are each hit.
        Assert.True(chains > 1000, $"only {chains} chains completed");
        Assert.Contains(rejections, m => m.Contains("a loop through next"));
        Assert.Contains(rejections, m => m.Contains("nested indirect tables"));
        Assert.Contains(rejections, m => m.Contains("both the INDIRECT and NEXT flags"));
        Assert.Contains(rejections, m => m.Contains("device-readable buffer after a device-writable one"));
        Assert.Contains(rejections, m => m.Contains("not inside one region of guest RAM"));
        Assert.Contains(rejections, m => m.Contains("more than the queue size"));
    }

    [Fact]
    public void FuzzTarget_EmptyInput_IsAOneEntryQueueWithNothingAvailable()
    {
        var result = VirtqueueFuzzTarget.Run([]);
        Assert.Equal(new FuzzRunResult(0, Rejection: null), result);
    }

    [Fact]
    public void SmokeRun_ReportsNoUnexpectedException()
    {
        var output = new StringWriter();
        Assert.Equal(0, SmokeRun.Run(new VirtqueueTarget(), 500, seed: 3, output));
        Assert.Contains("500 inputs", output.ToString());
        Assert.Contains("no unexpected exception", output.ToString());
    }
}
