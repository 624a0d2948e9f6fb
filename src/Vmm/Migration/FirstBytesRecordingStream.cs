namespace Vmm.Migration;

/// <summary>Passes everything through and keeps a copy of the first bytes read: when a TLS handshake fails,
/// what the peer sent instead (a plain vmm frame, nothing at all) says why better than the TLS error does.</summary>
internal sealed class FirstBytesRecordingStream(Stream inner, int capacity) : Stream
{
    private readonly byte[] _recorded = new byte[capacity];
    private int _length;

    public ReadOnlySpan<byte> Recorded => _recorded.AsSpan(0, _length);

    public override int Read(Span<byte> buffer)
    {
        int read = inner.Read(buffer);
        Record(buffer[..read]);
        return read;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int read = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        Record(buffer.Span[..read]);
        return read;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <summary>Reads on, recording, until <paramref name="count"/> bytes are recorded (at most the capacity) or
    /// the stream ends.</summary>
    public void RecordUpTo(int count)
    {
        count = Math.Min(count, _recorded.Length);
        byte[] buffer = new byte[Math.Max(count - _length, 0)];
        while (_length < count && Read(buffer.AsSpan(0, count - _length)) > 0) { }
    }

    private void Record(ReadOnlySpan<byte> read)
    {
        int n = Math.Min(read.Length, _recorded.Length - _length);
        read[..n].CopyTo(_recorded.AsSpan(_length));
        _length += n;
    }

    public override void Write(ReadOnlySpan<byte> buffer) => inner.Write(buffer);
    public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => inner.WriteAsync(buffer, cancellationToken);
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => inner.WriteAsync(buffer, offset, count, cancellationToken);
    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing) inner.Dispose();
        base.Dispose(disposing);
    }
}
