namespace Vmm.Devices;

/// <summary>Where a device's output to the outside world goes once the gate lets it out (a TAP, the console).</summary>
public interface IGuestOutputSink
{
    void WriteNow(ReadOnlySpan<byte> data);
}

/// <summary>Output commit for replication (Remus): while <see cref="IsHolding"/>, what the guest sends outside (TAP
/// frames, console bytes) is kept here, tagged with the epoch it was sent in, and leaves the host only when that
/// epoch is committed on the standby, so nobody outside ever sees what a failover would take back. The guest's
/// queues move on meanwhile. Without replication everything passes straight through. Held output is bounded:
/// beyond <see cref="MaxHeldBytes"/> new output is dropped and counted, as a NIC drops frames it cannot queue.</summary>
public sealed class GuestOutputGate
{
    public const long MaxHeldBytes = 64L << 20;

    private readonly object _lock = new();
    private readonly Queue<(long Epoch, IGuestOutputSink Sink, byte[] Data, long HeldAtTicks)> _held = new();
    private volatile bool _holding;
    /// <summary>The epoch output now goes into; sealed ones are below it.</summary>
    private long _openEpoch;
    private long _heldBytes, _droppedBytes, _releasedBytes;
    private long _releasedWrites, _delayTicksTotal, _delayTicksMax;

    /// <summary>Read without a lock by the device threads: a writer that sees true calls <see cref="Hold"/>, which
    /// checks again under the lock.</summary>
    public bool IsHolding => _holding;

    public long HeldBytes { get { lock (_lock) return _heldBytes; } }
    public long DroppedBytes { get { lock (_lock) return _droppedBytes; } }
    public long ReleasedBytes { get { lock (_lock) return _releasedBytes; } }

    /// <summary>How long released output waited, on average and at most since holding began: the latency output
    /// commit adds to the guest's console and network output.</summary>
    public (double AverageMs, double MaxMs) ReleaseDelay
    {
        get
        {
            lock (_lock)
                return _releasedWrites == 0 ? (0, 0)
                    : (_delayTicksTotal * 1000.0 / System.Diagnostics.Stopwatch.Frequency / _releasedWrites, _delayTicksMax * 1000.0 / System.Diagnostics.Stopwatch.Frequency);
        }
    }

    /// <summary>Sends <paramref name="data"/> now, or holds a copy until its epoch is committed.</summary>
    public void Write(IGuestOutputSink sink, ReadOnlySpan<byte> data)
    {
        if (!_holding)
        {
            sink.WriteNow(data);
            return;
        }
        Hold(sink, data.ToArray());
    }

    /// <summary>Holds <paramref name="data"/> (the caller's copy, kept as is) in the open epoch; sends it at once
    /// when holding ended meanwhile.</summary>
    public void Hold(IGuestOutputSink sink, byte[] data)
    {
        lock (_lock)
        {
            if (!_holding)
            {
                sink.WriteNow(data);
                return;
            }
            if (_heldBytes + data.Length > MaxHeldBytes)
            {
                _droppedBytes += data.Length;
                return;
            }
            _held.Enqueue((_openEpoch, sink, data, System.Diagnostics.Stopwatch.GetTimestamp()));
            _heldBytes += data.Length;
        }
    }

    /// <summary>From now on output is held; <paramref name="firstEpoch"/> is the epoch it is tagged with until
    /// the next <see cref="Seal"/>. Call with the VM paused, so no output falls between.</summary>
    public void StartHolding(long firstEpoch)
    {
        lock (_lock)
        {
            _openEpoch = firstEpoch;
            _holding = true;
            _releasedWrites = _delayTicksTotal = _delayTicksMax = 0;
        }
    }

    /// <summary>Ends the open epoch (with the VM paused: the output of that epoch is all in); output from now on
    /// belongs to the next one.</summary>
    public void Seal(long epoch)
    {
        lock (_lock) _openEpoch = epoch + 1;
    }

    /// <summary>The standby holds <paramref name="epoch"/>: its output, and every earlier epoch's, leaves now.</summary>
    public void Release(long epoch)
    {
        lock (_lock)
        {
            while (_held.TryPeek(out var item) && item.Epoch <= epoch)
                Send(_held.Dequeue());
        }
    }

    /// <summary>Replication ended (the primary runs on unprotected): everything held leaves, in order, and output
    /// passes straight through again.</summary>
    public void StopHolding()
    {
        lock (_lock)
        {
            while (_held.TryDequeue(out var item)) Send(item);
            _holding = false;
        }
    }

    private void Send((long Epoch, IGuestOutputSink Sink, byte[] Data, long HeldAtTicks) item)
    {
        long delay = System.Diagnostics.Stopwatch.GetTimestamp() - item.HeldAtTicks;
        _releasedWrites++;
        _delayTicksTotal += delay;
        _delayTicksMax = Math.Max(_delayTicksMax, delay);
        _heldBytes -= item.Data.Length;
        try
        {
            item.Sink.WriteNow(item.Data);
            _releasedBytes += item.Data.Length;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or VmmException)
        {
            // The console went away, the TAP refused the frame: lost, as it would have been unheld.
            _droppedBytes += item.Data.Length;
        }
    }
}
