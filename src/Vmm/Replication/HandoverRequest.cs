namespace Vmm.Replication;

/// <summary>Where a control request asking for a planned handover meets the replication thread that carries it out:
/// at most one is asked at a time; it is answered with the epoch handed over, or with why it failed, and one asked as
/// replication ends is answered too (never left waiting).</summary>
internal sealed class HandoverRequest : IDisposable
{
    private readonly ManualResetEventSlim _asked = new();
    private readonly object _lock = new();
    private TaskCompletionSource<long>? _pending;
    private bool _ended;

    /// <summary>Signalled while a handover is asked for: the epoch loop takes the final epoch at once.</summary>
    public WaitHandle Asked => _asked.WaitHandle;

    /// <summary>Asks for the handover and waits for its answer. <paramref name="refusal"/>, checked under the lock,
    /// says why there is nothing to hand over (null: there is).</summary>
    public long Ask(Func<string?> refusal)
    {
        var pending = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            string? why = refusal();
            if (_ended) why ??= "replication has ended";
            if (why is not null)
                throw new ReplicationException($"the VM is not protected ({why}): there is nothing to hand over");
            if (_pending is not null) throw new ReplicationException("a handover is under way already");
            _pending = pending;
        }
        _asked.Set();
        try
        {
            return pending.Task.GetAwaiter().GetResult();
        }
        finally
        {
            lock (_lock) _pending = null;
        }
    }

    /// <summary>Replication has ended: handed over at <paramref name="epoch"/> (above 0), or failed with <paramref name="failure"/>.</summary>
    public void End(long epoch, Func<Exception> failure)
    {
        lock (_lock)
        {
            _ended = true;
            if (epoch > 0) _pending?.TrySetResult(epoch);
            else _pending?.TrySetException(failure());
        }
    }

    public void Dispose() => _asked.Dispose();
}
