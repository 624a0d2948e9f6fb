using System.Diagnostics;
using Vmm.Diagnostics;
using Vmm.Vm;

namespace Vmm.Replication;

/// <summary>The output-commit rule when replication ends: nothing the guest let out may be taken back. A standby that
/// knows replication ended (it was told, or it gave up, or it holds a handover) will not resume the VM, so what is held
/// may leave at once. One that may still take over (silent, cut off) fences this host before it resumes, once this
/// primary has been silent for its failover timeout, and its fence may run its whole timeout: output leaves only once
/// twice that failover timeout plus the fence timeout has passed since the standby last answered (one failover timeout
/// more covers the resume and the clocks' drift), and this primary still runs. The hold ends early only when a standby
/// at that address admits this VM again: a standby gives a lost primary's replica up only to that VM's own primary,
/// and a new process on that address means the old one is gone. A VM that stops meanwhile, or a replicate --stop,
/// waits the hold out: the standby may still resume an epoch before the held output, and then the guest would say it
/// again.</summary>
internal sealed class LostStandbyHold(Machine machine, ReplicationOptions options, CancellationToken stop, Logger log)
{
    /// <summary>How often a primary that lost its standby knocks on its address again while it holds the output.</summary>
    private static readonly TimeSpan KnockEvery = TimeSpan.FromSeconds(1);
    /// <summary>How long released output may take to be written out before the VM's process may close its console.</summary>
    private static readonly TimeSpan ReleasedOutputGrace = TimeSpan.FromSeconds(10);

    /// <summary>When the hold ends (ticks of <see cref="Stopwatch"/>; 0: no hold).</summary>
    private long _endsTicks;

    /// <summary>How the hold ended.</summary>
    public enum End { Released, StandbyAnsweredAgain }

    /// <summary>What is left of a hold under way.</summary>
    public TimeSpan Remaining => TimeSpan.FromTicks(Math.Max(0, -Stopwatch.GetElapsedTime(Interlocked.Read(ref _endsTicks)).Ticks));

    /// <summary>Releases the output held when replication ended, after the hold the lost standby is due (<paramref name="losing"/>
    /// is called when it begins, for the status); waits for the released output to be written out.</summary>
    public End Release(StandbyLink? lastLink, bool standbyKnows, Action<TimeSpan> losing)
    {
        var end = End.Released;
        if (machine.Output.IsHolding && !standbyKnows && lastLink is not null)
        {
            var wait = 2 * lastLink.FailoverTimeout + lastLink.FenceTimeout - lastLink.SinceHeard;
            if (wait > TimeSpan.Zero)
            {
                Interlocked.Exchange(ref _endsTicks, Stopwatch.GetTimestamp() + (long)(wait.TotalSeconds * Stopwatch.Frequency));
                losing(wait);
                log.Info($"replication: the standby may still take over; the guest's output stays held for {wait.TotalMilliseconds:F0} ms more, unless a standby answers at {options.Standby} again");
                end = WaitOut();
            }
        }
        machine.Output.StopHolding();
        // Out before the VM's process may close its console; a console blocked for good loses what is left, as unheld.
        if (!machine.Output.WaitUntilWritten(ReleasedOutputGrace))
            log.Warning($"replication: the guest's released output could not all be written out within {ReleasedOutputGrace.TotalSeconds:0} s (a blocked console?)");
        return end;
    }

    private End WaitOut()
    {
        while (true)
        {
            var left = Remaining;
            if (left <= TimeSpan.Zero) return End.Released;
            if (machine.StopReason is not null || stop.IsCancellationRequested)
            {
                if (machine.StopReason is not null)
                    log.Info($"replication: the VM stopped; its {machine.Output.HeldBytes} bytes of held output leave in {left.TotalMilliseconds:F0} ms, once the lost standby can no longer take over");
                Thread.Sleep(left);
                return End.Released;
            }
            if (StandbyLink.Knock(options, machine, KnockEvery * 2, log))
            {
                log.Warning($"replication: a standby at {options.Standby} admitted this VM again, so the one lost there can no longer take over; the held output leaves, and replication starts over");
                return End.StandbyAnsweredAgain;
            }
            WaitHandle.WaitAny([machine.Stopping.WaitHandle, stop.WaitHandle], left < KnockEvery ? left : KnockEvery);
        }
    }
}
