using System.Text.RegularExpressions;
using Vmm.Firmware;
using Vmm.Tests.Integration;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary><c>vmm ctl snapshot</c> and <c>vmm run --restore</c> as a user runs them, with the memory-dirtying
/// guest: the restored guest goes on ticking from the snapshot and its final check of every byte passes.</summary>
[Trait("Category", "Process")]
public sealed class SnapshotProcessTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-snapp-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void SnapshotOfARunningGuest_RestoresAndRunsToASuccessfulEnd()
    {
        var g = new DirtyingGuestOptions(RegionMiB: 32, DirtyMiBPerSecond: 50, GuestTsc.Khz, TickMs: 100, Ticks: 60, FillRandomFirst: true);
        string kernel = Path.Combine(_directory, "dirty.elf"), socket = Path.Combine(_directory, "api.sock"), snapshot = Path.Combine(_directory, "snap");
        File.WriteAllBytes(kernel, FirmwareGuests.DirtyMemoryWithChecksum(g));
        int success = ExitCodes.FromExitPort(FirmwareGuests.ExitValueSuccess);

        using var source = new RunningVmm(["run", "--kernel", kernel, "--memory", "64M", "--api-socket", socket]);
        Assert.True(source.WaitForConsole("tick 00000003", Patience), source.ToString());
        using var ctl = new RunningVmm(["ctl", "--socket", socket, "snapshot", snapshot]);
        Assert.Equal(0, ctl.WaitForExit(Patience));
        Assert.Contains("\"state\":\"running\"", ctl.Console);
        // The snapshot paused the guest only while it was written: the source itself runs on to the end.
        Assert.Equal(success, source.WaitForExit(Patience));

        using var restored = new RunningVmm(["run", "--restore", snapshot]);
        int? restoredExit = restored.WaitForExit(Patience);
        output.WriteLine($"--- source ---\n{source}\n--- ctl ---\n{ctl}\n--- restored ---\n{restored}");

        Assert.Equal(success, restoredExit);
        var ticks = Regex.Matches(restored.Console, @"tick ([0-9a-f]{8})\n").Select(m => Convert.ToInt32(m.Groups[1].Value, 16)).ToList();
        Assert.NotEmpty(ticks);
        Assert.True(ticks[0] >= 4, $"the restored guest started again at tick {ticks[0]}, before the snapshot");
        Assert.Equal(Enumerable.Range(ticks[0], g.Ticks - ticks[0] + 1), ticks);
        Assert.EndsWith($"done {(ulong)(g.Ticks * g.PagesPerTick):x16}\n", restored.Console);
        Assert.DoesNotContain("ready", restored.Console);
        Assert.True(new FileInfo(Path.Combine(snapshot, "memory.bin")).Length == 64L << 20);
    }

    [Fact]
    public void Restore_OnAHostWhoseKvmLacksAFeatureTheGuestWasShown_ExitsWith2NamingIt()
    {
        // The snapshot of a guest shown a feature this host lacks stands in for one taken on a better-equipped host.
        string kernel = Path.Combine(_directory, "spin.elf"), snapshot = Path.Combine(_directory, "snap");
        File.WriteAllBytes(kernel, FirmwareGuests.SpinForever());
        using (var source = MachineBuilder.Boot(new MachineConfig
               {
                   KernelPath = kernel, MemoryBytes = 64UL << 20, SerialOutput = Stream.Null, AdjustCpuidForTests = FeatureThisHostLacks.ShowIn,
               }, new Vmm.Diagnostics.Logger(TextWriter.Null, Vmm.Diagnostics.LogLevel.Info)))
        {
            source.Pause();
            Vmm.Snapshot.SnapshotDirectory.Write(source, snapshot);
        }

        using var vmm = new RunningVmm(["run", "--restore", snapshot]);

        Assert.Equal(ExitCodes.VmmError, vmm.WaitForExit(Patience));
        Assert.Contains($"this host's KVM cannot give the guest the CPU it was shown: {FeatureThisHostLacks.Feature}", vmm.Log);
    }

    [Fact]
    public void Restore_WithMachineOptions_IsRefused()
    {
        using var vmm = new RunningVmm(["run", "--restore", _directory, "--memory", "1G", "--cpus", "2"]);
        Assert.Equal(ExitCodes.VmmError, vmm.WaitForExit(Patience));
        Assert.Contains("--memory, --cpus cannot be given with it", vmm.Log);
    }

    [Fact]
    public void Restore_FromADirectoryWithoutASnapshot_SaysSo()
    {
        using var vmm = new RunningVmm(["run", "--restore", _directory]);
        Assert.Equal(ExitCodes.VmmError, vmm.WaitForExit(Patience));
        Assert.Contains("is not a vmm snapshot", vmm.Log);
    }

    [Fact]
    public void Restore_FromACorruptedState_SaysSo()
    {
        File.WriteAllBytes(Path.Combine(_directory, "state.bin"), "VMMSTATE\u0001\0\0\0garbage"u8.ToArray());
        File.WriteAllBytes(Path.Combine(_directory, "memory.bin"), new byte[4096]);
        using var vmm = new RunningVmm(["run", "--restore", _directory]);
        Assert.Equal(ExitCodes.VmmError, vmm.WaitForExit(Patience));
        Assert.Contains("truncated", vmm.Log);
    }
}
