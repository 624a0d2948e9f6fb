using Vmm.Migration;

namespace Vmm.Replication;

/// <summary>One epoch's frames, built while the VM is paused (its dirty pages, its changed disk blocks) and sent
/// once it runs again: the guest pauses only for copies in memory, never for the network. Buffers are kept for
/// the next epoch, up to <see cref="KeptBuffers"/> (what a busier epoch needed beyond that goes back to the GC).</summary>
internal sealed class EpochStaging : IFrameSink
{
    private const int KeptBuffers = 32;

    private readonly Stack<byte[]> _free = new();
    private readonly List<(MigrationFrameType Type, byte[] Buffer, int HeadLength, int DataLength)> _frames = [];

    public int FrameCount => _frames.Count;

    public byte[] Rent() => _free.TryPop(out var buffer) ? buffer : new byte[FrameWriter.BufferBytes];

    public void Return(byte[] buffer)
    {
        if (_free.Count < KeptBuffers) _free.Push(buffer);
    }

    public void Submit(MigrationFrameType type, byte[] buffer, int headLength, int dataLength) =>
        _frames.Add((type, buffer, headLength, dataLength));

    /// <summary>Sends every staged frame in the order it was built, then empties the staging.</summary>
    public void SendAll(MigrationChannel channel)
    {
        try
        {
            foreach (var (type, buffer, headLength, dataLength) in _frames)
                channel.Send(type, buffer.AsSpan(0, headLength), buffer.AsSpan(FrameWriter.DataOffset, dataLength));
        }
        finally
        {
            Clear();
        }
    }

    public void Clear()
    {
        foreach (var frame in _frames) Return(frame.Buffer);
        _frames.Clear();
    }
}
