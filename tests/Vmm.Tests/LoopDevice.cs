namespace Vmm.Tests;

/// <summary>A host block device for a test: a loop device over an image file (losetup, as root), detached on dispose.
/// It stands in for the LVM volumes and DRBD devices users give vmm as disks.</summary>
internal sealed class LoopDevice : IDisposable
{
    private LoopDevice(string path) => Path = path;

    /// <summary>The device node, /dev/loopN.</summary>
    public string Path { get; }

    public static LoopDevice Attach(string image) => new(HostCommand.Checked("losetup", "--find", "--show", image).Trim());

    public void Dispose() => HostCommand.Run("losetup", "--detach", Path);
}
