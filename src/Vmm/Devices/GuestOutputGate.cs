using System.Diagnostics;

namespace Vmm.Devices;

/// <summary>Where a device's output to the outside world goes once the gate lets it out (a TAP, the console).</summary>
public interface IGuestOutputSink
{
    void WriteNow(ReadOnlySpan<byte> data);
}

/// <summary>Output commit for replication (Remus): while <see cref="IsHolding"/>, what the guest sends outside (TAP
/// frames, console bytes) is kept here, tagged with the epoch it was sent in, and leaves the host only when that
/// epoch is committed on the standby, so nobody outside ever sees what a failover would take back. The guest's
/// queues move on meanwhile. Without replication everything passes straight through.
/// <para>Console bytes of one epoch are kept together in chunks (a byte each would cost a whole array each), frames
/// one by one. Released output is written out by a task of the gate's own, never under its lock and never on the
/// thread that commits epochs: a console that blocks (a full pipe, a stopped terminal) holds up neither the vCPUs nor
/// replication. Held and released-but-unwritten output together are bounded: beyond <see cref="MaxHeldBytes"/> new
/// output is dropped and counted, as a NIC drops frames it cannot queue.</para></summary>
public sealed class GuestOutputGate
{
    public const long MaxHeldBytes = 64L << 20;
    /// <summary>Console bytes are gathered into chunks of this size.</summary>
    private const int ChunkBytes = 4096;

    /// <summary>Output kept until its epoch commits: console bytes gathered (<see cref="Gathers"/>), or one frame.</summary>
    private sealed class Chunk(long epoch, IGuestOutputSink sink, byte[] data, int length, bool gathers)
    {
        public long Epoch => epoch;
        public IGuestOutputSink Sink => sink;
        public bool Gathers => gathers;
        public byte[] Data = data;
        public int Length = length;
        public readonly long HeldAtTicks = Stopwatch.GetTimestamp();
    }

    private readonly object _lock = new();
    private readonly Queue<Chunk> _held = new(), _released = new();
    private volatile bool _holding;
    /// <summary>Chunks released and not yet written out (the one being written included): while any are, new output
    /// queues behind them, so nothing overtakes it.</summary>
    private volatile int _unwritten;
    private bool _writing;
    /// <summary>The newest chunk of each queue, which console bytes may be gathered onto.</summary>
    private Chunk? _lastHeld, _lastReleased;
    /// <summary>The epoch output now goes into; sealed ones are below it.</summary>
    private long _openEpoch;
    private long _heldBytes, _droppedBytes, _releasedBytes;
    /// <summary>What the held and unwritten chunks take in memory (gathering chunks count whole): the bounded amount.</summary>
    private long _memoryBytes;
    private long _releasedWrites, _delayTicksTotal, _delayTicksMax;

    /// <summary>Read without a lock by the device threads: a writer that sees true calls <see cref="Hold"/>, which
    /// checks again under the lock.</summary>
    public bool IsHolding => _holding;

    /// <summary>Output waiting for its epoch's commit.</summary>
    public long HeldBytes { get { lock (_lock) return _heldBytes; } }
    public long DroppedBytes { get { lock (_lock) return _droppedBytes; } }
    /// <summary>Output released and written out.</summary>
    public long ReleasedBytes { get { lock (_lock) return _releasedBytes; } }

    /// <summary>How long released output waited, on average and at most since holding began: the latency output
    /// commit adds to the guest's console and network output.</summary>
    public (double AverageMs, double MaxMs) ReleaseDelay
    {
        get
        {
            lock (_lock)
                return _releasedWrites == 0 ? (0, 0)
                    : (_delayTicksTotal * 1000.0 / Stopwatch.Frequency / _releasedWrites, _delayTicksMax * 1000.0 / Stopwatch.Frequency);
        }
    }

    /// <summary>Sends console bytes now, or keeps a copy until their epoch is committed.</summary>
    public void Write(IGuestOutputSink sink, ReadOnlySpan<byte> data)
    {
        if (!_holding && _unwritten == 0)
        {
            sink.WriteNow(data);
            return;
        }
        lock (_lock)
        {
            if (!_holding && _unwritten == 0) goto direct;
            // Onto the newest chunk when it is this sink's bytes of this epoch and has room: one array per 4 KiB, not
            // per byte. A released chunk only while another is ahead of it: the one at the head may be being written.
            var last = _holding ? _lastHeld : _released.Count > 1 ? _lastReleased : null;
            if (last is { Gathers: true } && last.Sink == sink && last.Epoch == _openEpoch && last.Data.Length - last.Length >= data.Length)
            {
                data.CopyTo(last.Data.AsSpan(last.Length));
                last.Length += data.Length;
                if (_holding) _heldBytes += data.Length;
                return;
            }
            byte[] buffer = new byte[Math.Max(ChunkBytes, data.Length)];
            if (!Admit(buffer.Length, data.Length)) return;
            data.CopyTo(buffer);
            Enqueue(new Chunk(_openEpoch, sink, buffer, data.Length, gathers: true));
            return;
        }
    direct:
        // Outside the lock: a console that blocks holds up only its writer, never the status or the epochs.
        sink.WriteNow(data);
    }

    /// <summary>Holds a frame (the caller's copy, kept as is) in the open epoch; sends it at once when nothing is held
    /// or waiting to be written.</summary>
    public void Hold(IGuestOutputSink sink, byte[] frame)
    {
        lock (_lock)
        {
            if (!_holding && _unwritten == 0) goto direct;
            if (Admit(frame.Length, frame.Length)) Enqueue(new Chunk(_openEpoch, sink, frame, frame.Length, gathers: false));
            return;
        }
    direct:
        sink.WriteNow(frame);
    }

    /// <summary>Whether a chunk taking <paramref name="memoryBytes"/> fits under the bound; counts its
    /// <paramref name="bytes"/> dropped when not.</summary>
    private bool Admit(int memoryBytes, int bytes)
    {
        if (_memoryBytes + memoryBytes <= MaxHeldBytes) return true;
        _droppedBytes += bytes;
        return false;
    }

    private void Enqueue(Chunk chunk)
    {
        _memoryBytes += chunk.Data.Length;
        if (_holding)
        {
            _held.Enqueue(chunk);
            _lastHeld = chunk;
            _heldBytes += chunk.Length;
        }
        else
        {
            // Holding ended, and earlier output is still being written: this goes after it.
            MoveToReleased(chunk);
            StartWriting();
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

    /// <summary>The standby holds <paramref name="epoch"/>: its output, and every earlier epoch's, leaves now (is
    /// handed to the writing task, in order).</summary>
    public void Release(long epoch)
    {
        lock (_lock)
        {
            while (_held.TryPeek(out var chunk) && chunk.Epoch <= epoch)
            {
                _held.Dequeue();
                _heldBytes -= chunk.Length;
                MoveToReleased(chunk);
            }
            StartWriting();
        }
    }

    /// <summary>Replication ended (the primary runs on unprotected): everything held leaves, in order, and output
    /// passes straight through again once it is written.</summary>
    public void StopHolding()
    {
        lock (_lock)
        {
            while (_held.TryDequeue(out var chunk))
            {
                _heldBytes -= chunk.Length;
                MoveToReleased(chunk);
            }
            _holding = false;
            StartWriting();
        }
    }

    /// <summary>Waits until everything released has been written out, or <paramref name="timeout"/> passed; whether it
    /// was. For the end of replication, before the sinks close.</summary>
    public bool WaitUntilWritten(TimeSpan timeout)
    {
        var waiting = Stopwatch.StartNew();
        lock (_lock)
        {
            while (_unwritten > 0)
            {
                var left = timeout - waiting.Elapsed;
                if (left <= TimeSpan.Zero) return false;
                Monitor.Wait(_lock, left);
            }
        }
        return true;
    }

    private void MoveToReleased(Chunk chunk)
    {
        if (chunk == _lastHeld) _lastHeld = null;
        _released.Enqueue(chunk);
        _lastReleased = chunk;
        _unwritten++;
    }

    /// <summary>Starts the writing task unless it runs already (under the lock).</summary>
    private void StartWriting()
    {
        if (_writing || _released.Count == 0) return;
        _writing = true;
        Task.Run(WriteReleased);
    }

    /// <summary>Writes released chunks out in order until none is left; a sink that fails loses that chunk only, as
    /// it would have unheld.</summary>
    private void WriteReleased()
    {
        while (true)
        {
            Chunk chunk;
            lock (_lock)
            {
                if (!_released.TryPeek(out chunk!))
                {
                    _writing = false;
                    Monitor.PulseAll(_lock);
                    return;
                }
            }
            bool written;
            try
            {
                chunk.Sink.WriteNow(chunk.Data.AsSpan(0, chunk.Length));
                written = true;
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or VmmException)
            {
                // The console went away, the TAP refused the frame: lost, as it would have been unheld.
                written = false;
            }
            lock (_lock)
            {
                _released.Dequeue();
                long delay = Stopwatch.GetTimestamp() - chunk.HeldAtTicks;
                _releasedWrites++;
                _delayTicksTotal += delay;
                _delayTicksMax = Math.Max(_delayTicksMax, delay);
                _memoryBytes -= chunk.Data.Length;
                if (chunk == _lastReleased) _lastReleased = null;
                if (written) _releasedBytes += chunk.Length;
                else _droppedBytes += chunk.Length;
                _unwritten--;
                Monitor.PulseAll(_lock);
            }
        }
    }
}
