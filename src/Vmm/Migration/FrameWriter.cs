using System.Collections.Concurrent;
using System.Diagnostics;

namespace Vmm.Migration;

/// <summary>Overlaps building frames with sending them: the migration thread scans guest RAM and copies pages
/// (or reads a disk image) into one buffer while this writer's threads checksum and write (and, over TLS,
/// encrypt) the ones before. With several connections, one thread each, built frames go to them in turn. While it
/// runs, every frame goes through it, so frames never interleave on a connection. A few buffers circulate between the two. A send that fails (the connection broke, the socket was
/// closed under it) is kept and thrown to the migration thread at its next <see cref="Rent"/>,
/// <see cref="Submit"/> or <see cref="Drain"/>; the writer then discards what is still queued, so neither
/// side waits for the other forever.</summary>
internal sealed class FrameWriter : IFrameSink, IDisposable
{
    private readonly BlockingCollection<(MigrationFrameType Type, byte[] Buffer, int HeadLength, int DataLength)>[] _queued;
    private readonly BlockingCollection<byte[]> _free = new();
    private readonly Thread[] _threads;
    private int _next;
    /// <summary>Guards <see cref="_inFlight"/>; pulsed when it reaches zero.</summary>
    private readonly object _gate = new();
    private int _inFlight;
    private volatile Exception? _failure;
    private bool _disposed;

    public FrameWriter(IReadOnlyList<MigrationChannel> channels)
    {
        // One buffer being sent on each connection, one being built, one waiting: each side always has work.
        for (int i = 0; i < channels.Count + 2; i++) _free.Add(new byte[BufferBytes]);
        _queued = channels.Select(_ => new BlockingCollection<(MigrationFrameType, byte[], int, int)>()).ToArray();
        _threads = channels.Select((channel, i) => new Thread(() => Run(channel, _queued[i])) { Name = $"migration-writer-{i}", IsBackground = true }).ToArray();
        foreach (var thread in _threads) thread.Start();
    }

    /// <summary>How long the builder waited in <see cref="Rent"/> for a free buffer (the sending was slower), in
    /// <see cref="Stopwatch"/> ticks.</summary>
    public long RentWaitTicks { get; private set; }

    /// <summary>A buffer to build the next frame in; waits while all are queued for sending.</summary>
    public byte[] Rent()
    {
        ThrowIfFailed();
        if (!_free.TryTake(out var buffer))
        {
            long waiting = Stopwatch.GetTimestamp();
            buffer = _free.Take();
            RentWaitTicks += Stopwatch.GetTimestamp() - waiting;
        }
        ThrowIfFailed();
        return buffer;
    }

    /// <summary>Gives back a rented buffer that holds nothing to send.</summary>
    public void Return(byte[] buffer) => _free.Add(buffer);

    /// <summary>Queues a built frame: in a rented buffer, its head (a Pages frame's count and addresses, a disk
    /// frame's disk and offset: <paramref name="headLength"/> bytes from the start) and its data
    /// (<paramref name="dataLength"/> bytes from <see cref="DataOffset"/>).</summary>
    public void Submit(MigrationFrameType type, byte[] buffer, int headLength, int dataLength)
    {
        ThrowIfFailed();
        lock (_gate) _inFlight++;
        _queued[_next].Add((type, buffer, headLength, dataLength));
        _next = (_next + 1) % _queued.Length;
    }

    /// <summary>Where a frame's data starts in a buffer: after room for a Pages frame's count and every address it
    /// may hold. A buffer holds 1 MiB of data after it: 256 pages, or one DiskData frame's image bytes.</summary>
    public const int DataOffset = 4 + MigrationChannel.MaxPagesPerFrame * 8;
    public const int BufferBytes = DataOffset + MigrationChannel.MaxPagesPerFrame * MigrationChannel.PageSize;

    /// <summary>Returns once every queued frame has been sent, so the caller may use the channel itself.</summary>
    public void Drain()
    {
        lock (_gate)
            while (_inFlight > 0) Monitor.Wait(_gate);
        ThrowIfFailed();
    }

    private void ThrowIfFailed()
    {
        if (_failure is { } failure)
            throw failure as MigrationException ?? new MigrationException($"internal error in vmm while sending pages: {failure.Message}", failure);
    }

    private void Run(MigrationChannel channel, BlockingCollection<(MigrationFrameType Type, byte[] Buffer, int HeadLength, int DataLength)> queued)
    {
        foreach (var (type, buffer, headLength, dataLength) in queued.GetConsumingEnumerable())
        {
            try
            {
                if (_failure is null) channel.Send(type, buffer.AsSpan(0, headLength), buffer.AsSpan(DataOffset, dataLength));
            }
            catch (Exception e)
            {
                // A thread boundary: whatever the send threw ends this migration, never the process.
                Interlocked.CompareExchange(ref _failure, e, null);
            }
            _free.Add(buffer);
            lock (_gate)
                if (--_inFlight == 0) Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Stops the writer once what is queued is sent (or discarded after a failure); the channels are the
    /// caller's alone again afterwards.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var queued in _queued) queued.CompleteAdding();
        foreach (var thread in _threads) thread.Join();
        foreach (var queued in _queued) queued.Dispose();
        _free.Dispose();
    }
}
