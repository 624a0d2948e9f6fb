using System.Text;

namespace Vmm.Tests.Integration;

/// <summary>A serial output a test can read while the guest still writes to it (MemoryStream is not safe for that).</summary>
internal sealed class ConsoleCapture : Stream
{
    private readonly object _lock = new();
    private readonly StringBuilder _text = new();

    public string Text
    {
        get { lock (_lock) return _text.ToString(); }
    }

    /// <summary>Polls until the output contains <paramref name="expected"/>; false when <paramref name="timeout"/> passes first.</summary>
    public bool WaitFor(string expected, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!Text.Contains(expected, StringComparison.Ordinal))
        {
            if (DateTime.UtcNow >= deadline) return false;
            Thread.Sleep(10);
        }
        return true;
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        lock (_lock) _text.Append(Encoding.ASCII.GetString(buffer));
    }

    public override void WriteByte(byte value)
    {
        lock (_lock) _text.Append((char)value);
    }

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
