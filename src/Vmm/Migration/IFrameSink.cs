namespace Vmm.Migration;

/// <summary>Where frames built in rented buffers go (see <see cref="FrameWriter.DataOffset"/> for the layout): a
/// <see cref="FrameWriter"/> sends each while the next is built; a replication epoch keeps them until the guest
/// runs again, then sends them.</summary>
internal interface IFrameSink
{
    byte[] Rent();

    /// <summary>Gives back a rented buffer that holds nothing to send.</summary>
    void Return(byte[] buffer);

    void Submit(MigrationFrameType type, byte[] buffer, int headLength, int dataLength);
}
