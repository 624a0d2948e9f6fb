namespace Vmm.Devices.Virtio;

/// <summary>Device IDs (virtio 1.2, section 5).</summary>
public enum VirtioDeviceType : uint
{
    Net = 1,
    Block = 2,
}
