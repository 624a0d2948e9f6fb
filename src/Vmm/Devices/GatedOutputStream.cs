namespace Vmm.Devices;

/// <summary>The console's way out through a <see cref="GuestOutputGate"/>: the serial port writes here, and the
/// bytes reach <paramref name="inner"/> now, or at their epoch's commit while the VM is replicated.</summary>
public sealed class GatedOutputStream(Stream inner, GuestOutputGate gate) : Stream, IGuestOutputSink
{
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
    public override void Write(ReadOnlySpan<byte> buffer) => gate.Write(this, buffer);
    public override void WriteByte(byte value) => Write([value]);

    public void WriteNow(ReadOnlySpan<byte> data)
    {
        inner.Write(data);
        inner.Flush();
    }

    /// <summary>Each write reaches the inner stream flushed already.</summary>
    public override void Flush() { }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
