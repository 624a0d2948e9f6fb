using Vmm.Migration;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>The migration's commit under a lost last packet: whichever frame of the commit is lost (the target's
/// Prepared, the source's Commit, the target's Resumed), at no instant do two copies run, and a source left in doubt
/// learns from its target, by asking, where the VM runs. Each test cuts the link at one frame, certainly (a
/// <see cref="FrameCuttingProxy"/>), and checks the guest's whole console: every tick once, in order, across both hosts.</summary>
[Trait("Category", "Process")]
public sealed class MigrationCommitTests(ITestOutputHelper output) : MigrationProcessTestBase(output)
{
    [Fact]
    public void LostResumed_LeavesThisCopyPausedInDoubt_AndAResumeAsksTheTargetAndStopsThisCopy()
    {
        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(once: false);
        using var source = StartSource(g, socket);
        using var proxy = new FrameCuttingProxy(PortOf(listen), MigrationFrameType.Resumed, fromSource: false);
        using var ctl = Migrate(socket, proxy.Address, "--force");
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
        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(once: false);
        using var source = StartSource(g, socket);
        using var proxy = new FrameCuttingProxy(PortOf(listen), MigrationFrameType.Commit, fromSource: true);
        using var ctl = Migrate(socket, proxy.Address, "--force");
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
        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(once: false);
        using var source = StartSource(g, socket);
        using var proxy = new FrameCuttingProxy(PortOf(listen), MigrationFrameType.Prepared, fromSource: false);
        using var ctl = Migrate(socket, proxy.Address, "--force");
        var (ctlExit, sourceExit, _) = WaitForAll(ctl, source, target: null);
        Assert.True(target.WaitFor((_, log) => log.Contains("failed and was discarded"), Patience), target.ToString());
        Show("target", target);

        AssertFailedAndTheGuestRanOnHere(g, ctlExit, ctl, "keeps running here", sourceExit, source);
        Assert.DoesNotContain("runs here", target.Log);
    }

    [Fact]
    public void InDoubtWithTheTargetGone_ResumeIsRefused_UntilTheOperatorSaysTheTargetDoesNotRunIt()
    {
        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(once: false);
        using var source = StartSource(g, socket);
        using var proxy = new FrameCuttingProxy(PortOf(listen), MigrationFrameType.Commit, fromSource: true);
        using var ctl = Migrate(socket, proxy.Address, "--force");
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
            // SIGKILL by pid: Process.Kill of a whole tree can throw when a child ends meanwhile, and then nothing
            // would be killed and the Resumed never forwarded.
            HostCommand.Run("kill", "-KILL", ctl!.Id.ToString());
            ctl.WaitForExit(Patience);
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
}
