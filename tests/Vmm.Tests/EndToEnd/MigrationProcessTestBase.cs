using System.Text.RegularExpressions;
using Vmm.Firmware;
using Vmm.Tests.Integration;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>What the tests that migrate between `vmm` processes share: the memory-dirtying guest and what it
/// must print, starting a source and a target daemon, asking for a migration, and waiting on all of them.</summary>
public abstract class MigrationProcessTestBase(ITestOutputHelper output) : IDisposable
{
    protected static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);
    protected readonly string _directory = Directory.CreateTempSubdirectory("vmm-migp-").FullName;
    protected readonly List<string> _namespaces = [];
    /// <summary>Every process the helpers started, killed at the end should a failed assertion leave it running.</summary>
    private readonly List<RunningVmm> _started = [];

    public virtual void Dispose()
    {
        foreach (var process in _started) process.Dispose();
        foreach (string ns in _namespaces) HostCommand.Run("ip", "netns", "del", ns);
        Directory.Delete(_directory, recursive: true);
    }

    // 8 s of ticks: the migration must start and end while the guest runs, even when the whole suite
    // loads the two cores and a `vmm ctl` under the JIT takes a second or more to start.
    protected static DirtyingGuestOptions Guest(int regionMiB = 64, double dirtyMiBPerSecond = 100, int ticks = 80) =>
        new(regionMiB, dirtyMiBPerSecond, GuestTsc.Khz, TickMs: 100, Ticks: ticks, FillRandomFirst: true);

    protected static string ExpectedConsole(DirtyingGuestOptions g) =>
        "ready\n" + string.Concat(Enumerable.Range(1, g.Ticks).Select(t => $"tick {t:x8}\n")) + $"done {(ulong)(g.Ticks * g.PagesPerTick):x16}\n";

    protected static readonly int GuestSuccess = ExitCodes.FromExitPort(FirmwareGuests.ExitValueSuccess);

    protected RunningVmm StartSource(DirtyingGuestOptions g, string socket, IReadOnlyList<string>? wrapper = null, bool dirtyRing = false, params string[] extra)
    {
        string kernel = Path.Combine(_directory, $"dirty-{Path.GetFileNameWithoutExtension(socket)}.elf");
        File.WriteAllBytes(kernel, FirmwareGuests.DirtyMemoryWithChecksum(g));
        ulong memoryMiB = (FirmwareGuests.DirtyingRegionAddress >> 20) + (ulong)g.RegionMiB + 16;
        var source = Started(new RunningVmm(["run", "-v", "--kernel", kernel, "--memory", $"{memoryMiB}M", "--api-socket", socket, .. dirtyRing ? ["--dirty-ring"] : Array.Empty<string>(), .. extra], wrapper));
        Assert.True(source.WaitForConsole("tick 00000003", Patience), $"the source guest did not start ticking\n{source}");
        return source;
    }

    /// <summary>A target daemon; on 127.0.0.1:0 it picks its own port, which its log names.</summary>
    protected (RunningVmm Target, string Address) StartTarget(string listen = "127.0.0.1:0", IReadOnlyList<string>? wrapper = null, bool once = true, params string[] extra)
    {
        var target = Started(new RunningVmm(["migrate-receive", "-v", "--listen", listen, .. once ? ["--once"] : Array.Empty<string>(), .. extra], wrapper));
        Match? listening = null;
        Assert.True(target.WaitFor((_, log) => (listening = Regex.Match(log, @"waiting for migrations on (\S+:\d+)")).Success, Patience), $"the target did not listen\n{target}");
        return (target, listening!.Groups[1].Value);
    }

    protected RunningVmm Started(RunningVmm process)
    {
        _started.Add(process);
        return process;
    }

    /// <summary>The seeds a fault harness runs: <c>VMM_FAULT_SEEDS=FIRST:COUNT</c>, or the first
    /// <paramref name="defaultCount"/> (what CI runs).</summary>
    protected static IEnumerable<object[]> FaultSeeds(int defaultCount)
    {
        var (first, count) = Environment.GetEnvironmentVariable("VMM_FAULT_SEEDS") is { } range && range.Split(':') is [var f, var c]
            ? (int.Parse(f), int.Parse(c)) : (1, defaultCount);
        for (int seed = first; seed < first + count; seed++) yield return [seed];
    }

    /// <summary>Sends a signal (KILL, STOP, CONT) to a vmm process.</summary>
    protected static void Signal(RunningVmm process, string signal) => HostCommand.Run("kill", $"-{signal}", process.Id.ToString());

    protected static int PortOf(string address) => int.Parse(address[(address.LastIndexOf(':') + 1)..]);

    /// <summary>The number of the last tick the guest printed (0 before the first).</summary>
    protected static int LastTick(string console) =>
        Regex.Matches(console, @"tick ([0-9a-f]{8})\n") is { Count: > 0 } ticks ? Convert.ToInt32(ticks[^1].Groups[1].Value, 16) : 0;

    /// <summary>The number of the first whole tick line (the console may begin in the middle of one).</summary>
    protected static int FirstTick(string console) =>
        Regex.Match(console, @"tick ([0-9a-f]{8})\n") is { Success: true } tick ? Convert.ToInt32(tick.Groups[1].Value, 16) : int.MaxValue;

    /// <summary>A standby on a port of its own (its log names it), failing over after 1 s of silence. Its fences are
    /// quick, and a primary that loses it holds the guest's output for twice the failover timeout plus the fence
    /// timeout: 3 s keeps that short. Without a fence command it resumes only on 'vmm ctl failover'.</summary>
    protected (RunningVmm Standby, string Address, string ApiSocket) StartStandby(string name, string? fenceCommand, int fenceTimeoutS = 3, string listen = "127.0.0.1:0")
    {
        string disks = Directory.CreateDirectory(Path.Combine(_directory, $"{name}-disks")).FullName;
        string api = Path.Combine(_directory, $"{name}.sock");
        string[] fence = fenceCommand is null ? [] : ["--fence-command", fenceCommand];
        var standby = Started(new RunningVmm(["standby", "-v", "--listen", listen, "--disk-dir", disks, "--failover-timeout-ms", "1000",
                                              "--fence-timeout-s", fenceTimeoutS.ToString(), "--api-socket", api, .. fence]));
        Match? listening = null;
        Assert.True(standby.WaitFor((_, log) => (listening = Regex.Match(log, @"waiting for a primary on (\S+:\d+)")).Success, Patience), $"the standby did not listen\n{standby}");
        return (standby, listening!.Groups[1].Value, api);
    }

    /// <summary>A fence command that kills the primary and returns once it is dead: gone, or a zombie its parent (this
    /// test) has not reaped yet.</summary>
    protected string KillingFence(int primaryPid)
    {
        string script = Path.Combine(_directory, "fence.sh");
        File.WriteAllText(script, $"""
            kill -KILL {primaryPid} 2>/dev/null
            while [ -e /proc/{primaryPid} ] && ! grep -q '^State:[[:space:]]*Z' /proc/{primaryPid}/status 2>/dev/null; do sleep 0.05; done
            echo "fenced $VMM_VM_NAME at epoch $VMM_EPOCH"
            """);
        return $"sh {script}";
    }

    /// <summary>Waits until the source's guest has printed <paramref name="ticks"/> more ticks: it has then
    /// written at least that many ticks' pages since the wait began.</summary>
    protected static void WaitForMoreTicks(RunningVmm source, int ticks)
    {
        int from = LastTick(source.Console);
        Assert.True(source.WaitFor((console, _) => LastTick(console) >= from + ticks, Patience), $"the guest stopped ticking at {from}\n{source}");
    }

    /// <summary>Asks for a migration. One given --force without a pass limit gets --max-passes 3: it then ends
    /// after at most three passes and the final copy, however slowly this host copies against how fast the
    /// guest writes, so it always finishes while the guest still runs.</summary>
    protected static RunningVmm Migrate(string socket, string to, params string[] extra) =>
        new(["ctl", "--socket", socket, "migrate", "--to", to, .. extra,
             .. extra.Contains("--force") && !extra.Contains("--max-passes") ? ["--max-passes", "3"] : Array.Empty<string>()]);

    /// <summary>The migration request failed with <paramref name="reason"/>, and the guest never left: the
    /// source ran it to its successful end, every tick in order, all checks passed.</summary>
    protected static void AssertFailedAndTheGuestRanOnHere(DirtyingGuestOptions g, int? ctlExit, RunningVmm ctl, string reason, int? sourceExit, RunningVmm source)
    {
        Assert.Equal(1, ctlExit);
        Assert.Contains(reason, ctl.Console);
        Assert.Equal(GuestSuccess, sourceExit);
        Assert.Equal(ExpectedConsole(g), source.Console);
    }

    protected void Show(string name, RunningVmm process) => output.WriteLine($"--- {name} ---\n{process}");

    protected void Note(string line) => output.WriteLine(line);

    /// <summary>Waits for the migration request, then the source, then (unless told not to) the target to
    /// exit, writes what each printed to the test output, and returns their exit codes.</summary>
    protected (int? Ctl, int? Source, int? Target) WaitForAll(RunningVmm ctl, RunningVmm source, RunningVmm? target, bool targetToo = true)
    {
        int? ctlExit = ctl.WaitForExit(Patience);
        int? sourceExit = source.WaitForExit(Patience);
        int? targetExit = target is not null && targetToo ? target.WaitForExit(Patience) : null;
        Show("ctl", ctl);
        Show("source", source);
        if (target is not null) Show("target", target);
        return (ctlExit, sourceExit, targetExit);
    }
}
