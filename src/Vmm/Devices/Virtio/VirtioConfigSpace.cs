namespace Vmm.Devices.Virtio;

/// <summary>Reads from a device's configuration structure at any offset and width, as drivers do
/// (byte by byte, or 32 bits at a time); bytes past its end read as zero.</summary>
public static class VirtioConfigSpace
{
    public static void Read(ReadOnlySpan<byte> config, int offset, Span<byte> data)
    {
        data.Clear();
        if (offset < 0 || offset >= config.Length) return;
        config[offset..Math.Min(config.Length, offset + data.Length)].CopyTo(data);
    }
}
