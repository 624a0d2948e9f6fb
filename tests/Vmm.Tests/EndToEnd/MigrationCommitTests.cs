using Vmm.Firmware;
using Vmm.Migration;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>The migration's commit under a lost last packet: whichever frame of the commit is lost (the target's
/// Prepared, the source's Commit, the target's Resumed), at no instant do two copies run, and a source left in doubt
/// learns from its target, by asking, where the VM runs. Each test cuts the link at one frame, certainly (a
/// <see cref="FrameCuttingProxy"/>), and checks the guest's whole console: every tick once, in order, across both hosts.</summary>
[Trait("Category", "Process")]
public sealed class MigrationCommitTests : MigrationProcessTestBase
{
    private readonly DirtyingGuestOptions _guest = Guest();
    private readonly string _socket;
    private FrameCuttingProxy? _proxy;

    public MigrationCommitTests(ITestOutputHelper output) : base(output) => _socket = Path.Combine(_directory, "src.sock");

    public override void Dispose()
    {
        _proxy?.Dispose();
        base.Dispose();
    }

    /// <summary>A target daemon, a source running the guest, and its migration through a proxy that loses the first
    /// <paramref name="lost"/> frame going the way <paramref name="fromSource"/> says; returns once the request ended
    /// (its answer is the caller's to judge). The proxy stays, passing what comes after: a source in doubt asks through it.</summary>
    private (RunningVmm Source, RunningVmm Target, RunningVmm Ctl) MigrateLosing(MigrationFrameType lost, bool fromSource)
    {
        var (target, listen) = StartTarget(once: false);
        var source = StartSource(_guest, _socket);
        _proxy = new FrameCuttingProxy(PortOf(listen), lost, fromSource);
        var ctl = Started(Migrate(_socket, _proxy.Address, "--force"));
        ctl.WaitForExit(Patience);
        return (source, target, ctl);
    }

    [Fact]
    public void LostResumed_LeavesThisCopyPausedInDoubt_AndAResumeAsksTheTargetAndStopsThisCopy()
    {
        var g = _guest;
        string socket = _socket;
        var (source, target, ctl) = MigrateLosing(MigrationFrameType.Resumed, fromSource: false);
        Assert.True(ctl.WaitForExit(Patience) == 1, ctl.ToString());
        Assert.Contains("\"state\":\"in-doubt\"", ctl.Console);
        Assert.True(target.WaitFor((_, log) => log.Contains("the VM runs here"), Patience), target.ToString());

        using (var status = new RunningVmm(["ctl", "--socket", socket, "status"]))
        {
            Assert.True(status.WaitForExit(Patience) == 0, status.ToString());
            Assert.Contains("\"state\":\"in-doubt\"", status.Console);
        }
        // The source never resumes it by itself; asked, the target says the VM is there, so this copy goes.
        using (var resume = new RunningVmm(["ctl", "--socket", socket, "resume"]))
        {
            Assert.True(resume.WaitForExit(Patience) == 1, resume.ToString());
            Assert.Contains("took the migration's commit", resume.Console);
        }
        int? sourceExit = source.WaitForExit(Patience);
        Assert.True(target.WaitFor((_, log) => log.Contains("migration 1: VM stopped"), Patience), target.ToString());
        Show("source", source); Show("target", target);

        Assert.Equal(0, sourceExit);
        Assert.Contains("the VM now runs on", source.Log);
        Assert.Contains($"(exit code {GuestSuccess})", target.Log);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
    }

    [Fact]
    public void LostCommit_LeavesThisCopyInDoubt_AndAResumeAsksTheTargetAndRunsItHere()
    {
        var g = _guest;
        string socket = _socket;
        var (source, target, ctl) = MigrateLosing(MigrationFrameType.Commit, fromSource: true);
        Assert.True(ctl.WaitForExit(Patience) == 1, ctl.ToString());
        Assert.Contains("\"state\":\"in-doubt\"", ctl.Console);
        Assert.True(target.WaitFor((_, log) => log.Contains("failed and was discarded"), Patience), target.ToString());

        using (var resume = new RunningVmm(["ctl", "--socket", socket, "resume"]))
            Assert.True(resume.WaitForExit(Patience) == 0, resume.ToString());
        int? sourceExit = source.WaitForExit(Patience);
        Show("source", source); Show("target", target);

        Assert.Equal(GuestSuccess, sourceExit);
        Assert.Contains("discarded the migration before its commit", source.Log);
        Assert.DoesNotContain("runs here", target.Log);
        Assert.Equal(ExpectedConsole(g), source.Console);
    }

    [Fact]
    public void LostPrepared_ResumesTheVmHere_AndTheTargetNeverRunsIt()
    {
        var g = _guest;
        var (source, target, ctl) = MigrateLosing(MigrationFrameType.Prepared, fromSource: false);
        var (ctlExit, sourceExit, _) = WaitForAll(ctl, source, target: null);
        Assert.True(target.WaitFor((_, log) => log.Contains("failed and was discarded"), Patience), target.ToString());
        Show("target", target);

        AssertFailedAndTheGuestRanOnHere(g, ctlExit, ctl, "keeps running here", sourceExit, source);
        Assert.DoesNotContain("runs here", target.Log);
    }

    [Fact]
    public void InDoubtWithTheTargetGone_ResumeIsRefused_UntilTheOperatorSaysTheTargetDoesNotRunIt()
    {
        var g = _guest;
        string socket = _socket;
        var (source, target, ctl) = MigrateLosing(MigrationFrameType.Commit, fromSource: true);
        Assert.True(ctl.WaitForExit(Patience) == 1, ctl.ToString());
        Assert.True(target.WaitFor((_, log) => log.Contains("failed and was discarded"), Patience), target.ToString());
        target.Kill();
        target.WaitForExit(Patience);

        using (var resume = new RunningVmm(["ctl", "--socket", socket, "resume"]))
        {
            Assert.True(resume.WaitForExit(Patience) == 1, resume.ToString());
            Assert.Contains("could not be asked", resume.Console);
            Assert.Contains("--target-not-running", resume.Console);
        }
        using (var status = new RunningVmm(["ctl", "--socket", socket, "status"]))
        {
            Assert.True(status.WaitForExit(Patience) == 0, status.ToString());
            Assert.Contains("\"state\":\"in-doubt\"", status.Console);
        }
        using (var resume = new RunningVmm(["ctl", "--socket", socket, "resume", "--target-not-running"]))
            Assert.True(resume.WaitForExit(Patience) == 0, resume.ToString());
        int? sourceExit = source.WaitForExit(Patience);
        Show("source", source);

        Assert.Equal(GuestSuccess, sourceExit);
        Assert.Equal(ExpectedConsole(g), source.Console);
    }

    [Fact]
    public void AClientKilledBeforeTheAnswer_StillLeavesNoCopyHere()
    {
        // The source stops once the target confirmed, whether or not anyone is left to read the answer.
        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(once: false);
        using var source = StartSource(g, socket);
        RunningVmm? ctl = null;
        using var proxy = new GatedMigrationProxy(PortOf(listen), (type, _) =>
        {
            if (type != MigrationFrameType.Resumed) return;
            // By pid, and waited for by pid: the test thread waits for this client (and then disposes it) at the same time.
            int pid = ctl!.Id;
            HostCommand.Run("kill", "-KILL", pid.ToString());
            while (Alive(pid)) Thread.Sleep(20);
        });
        using (ctl = Migrate(socket, proxy.Address, "--force"))
            Assert.True(ctl.WaitForExit(Patience) is { } killed && killed is not (0 or 1), $"the client was not killed before the answer\n{ctl}");
        int? sourceExit = source.WaitForExit(Patience);
        Assert.True(target.WaitFor((_, log) => log.Contains("migration 1: VM stopped"), Patience), target.ToString());
        Show("source", source); Show("target", target);

        Assert.Equal(0, sourceExit);
        Assert.Contains("the VM now runs on", source.Log);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
    }

    /// <summary>Whether process <paramref name="pid"/> still runs (not gone, not a zombie waiting for its parent).</summary>
    private static bool Alive(int pid)
    {
        try
        {
            return !File.ReadAllText($"/proc/{pid}/status").Contains("State:\tZ");
        }
        catch (IOException)
        {
            return false;
        }
    }
}
