using System.Diagnostics;
using Vmm.Diagnostics;
using Vmm.Firmware;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.Integration;

/// <summary>The memory-dirtying guest that migration tests and benchmarks run: its pacing, its own checks, and
/// proof that those checks catch a page changed behind its back.</summary>
public sealed class DirtyingGuestTests : IDisposable
{
    private readonly FirmwareGuestRunner _runner = new();
    private readonly ITestOutputHelper _output;

    public DirtyingGuestTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => _runner.Dispose();

    /// <summary>RAM below the region, the region, and room to spare.</summary>
    private static ulong MemoryBytesFor(DirtyingGuestOptions options) =>
        FirmwareGuests.DirtyingRegionAddress + ((ulong)options.RegionMiB << 20) + (16UL << 20);

    private static string ExpectedConsole(DirtyingGuestOptions options) =>
        "ready\n"
        + string.Concat(Enumerable.Range(1, options.Ticks).Select(t => $"tick {t:x8}\n"))
        + $"done {(ulong)(options.Ticks * options.PagesPerTick):x16}\n";

    [Fact]
    public void RandomFillAndSteadyDirtying_TicksInOrderAtTheTickRateAndPassesTheFullCheck()
    {
        var options = new DirtyingGuestOptions(RegionMiB: 16, DirtyMiBPerSecond: 20, GuestTsc.Khz, TickMs: 50, Ticks: 10, FillRandomFirst: true);

        var wall = Stopwatch.StartNew();
        var result = _runner.Run(FirmwareGuests.DirtyMemoryWithChecksum(options), c => c with { MemoryBytes = MemoryBytesFor(options) });
        wall.Stop();
        _output.WriteLine($"wall {wall.ElapsedMilliseconds} ms for {options.Ticks} ticks of {options.TickMs} ms, {options.PagesPerTick} pages each");

        Assert.Equal(ExpectedConsole(options), result.Console);
        Assert.Equal(ExitCodes.FromExitPort(FirmwareGuests.ExitValueSuccess), result.Stop.ExitCode);
        Assert.True(wall.Elapsed >= TimeSpan.FromMilliseconds(options.Ticks * options.TickMs),
            $"{options.Ticks} ticks of {options.TickMs} ms took only {wall.ElapsedMilliseconds} ms: the TSC pacing is off");
    }

    [Fact]
    public void RateBeyondReach_RunsFlatOutAndStillWritesEveryPageOfEveryTick()
    {
        // 5.12 million page writes in a 1 ms tick: 5 billion a second, where this guest's CPL3 loop (a TSC read after
        // every write) managed 30 to 200 million here. Each tick must still do all of its writes, check, and go on.
        var options = new DirtyingGuestOptions(RegionMiB: 16, DirtyMiBPerSecond: 20_000_000, GuestTsc.Khz, TickMs: 1, Ticks: 3);

        var wall = Stopwatch.StartNew();
        var result = _runner.Run(FirmwareGuests.DirtyMemoryWithChecksum(options), c => c with { MemoryBytes = MemoryBytesFor(options) });
        _output.WriteLine($"wall {wall.ElapsedMilliseconds} ms for {options.Ticks} ticks of {options.TickMs} ms, {options.PagesPerTick} pages each");

        Assert.Equal(ExpectedConsole(options), result.Console);
        Assert.Equal(ExitCodes.FromExitPort(FirmwareGuests.ExitValueSuccess), result.Stop.ExitCode);
    }

    [Fact]
    public async Task FirstQwordChangedWhilePaused_IsReportedAsChecksumMismatch()
    {
        var options = new DirtyingGuestOptions(RegionMiB: 16, DirtyMiBPerSecond: 4, GuestTsc.Khz, TickMs: 50, Ticks: 0);
        var console = new ConsoleCapture();
        string kernel = _runner.WriteImage(FirmwareGuests.DirtyMemoryWithChecksum(options));
        using var machine = MachineBuilder.Boot(
            new MachineConfig { KernelPath = kernel, MemoryBytes = MemoryBytesFor(options), SerialOutput = console },
            new Logger(TextWriter.Null, LogLevel.Info));
        var run = Task.Run(machine.Run);
        try
        {
            Assert.True(console.WaitFor("tick 00000001\n", TimeSpan.FromSeconds(30)), $"no first tick; console: {console.Text}");
            machine.Pause();
            // The page of the last complete write is the one the guest comes back to last: no dirtying write can
            // fold the change into S before the tick's check.
            ulong writes = machine.Memory.Read<ulong>(FirmwareGuests.CounterAddress);
            Assert.True(writes > 0);
            ulong page = FirmwareGuests.DirtyingRegionAddress + (ulong)options.PageOfWrite(writes - 1) * DirtyingGuestOptions.PageBytes;
            machine.Memory.Write(page, machine.Memory.Read<ulong>(page) ^ 0x100);
            machine.Resume();

            Assert.True(await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(30))) == run, $"the guest did not stop; console: {console.Text}");
            Assert.Equal(ExitCodes.FromExitPort(FirmwareGuests.ExitValueFailure), (await run).ExitCode);
            Assert.Matches(@"\nchecksum mismatch at tick [0-9a-f]{8}\n$", console.Text);
        }
        finally
        {
            machine.RequestStop(VmStop.Error("test over"));
            await run;
        }
    }
}
