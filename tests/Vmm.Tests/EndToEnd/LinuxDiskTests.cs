using System.Security.Cryptography;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>virtio-blk with the guest-images kernel and its user space: an ext4 root on vda that the kernel mounts
/// read-write and the guest's init (vmmtest=disk) writes a pattern to, reads back from the disk after a read-only
/// remount, and leaves clean; and a read-only disk the kernel must refuse to write. The host then checks the image:
/// the pattern and the guest's file in place, e2fsck clean.</summary>
[Trait("Category", "LinuxBoot")]
[Collection(LinuxGuests.Collection)]
public sealed class LinuxDiskTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(20);
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-disk-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void Ext4RootOnVirtioBlk_IsMountedReadWriteAndTheHostSeesTheMount()
    {
        string root = MakeRootfs("root.ext4");
        string second = MakeRootfs("second.ext4");
        string secondHashBefore = Sha256(second);
        Assert.Equal("0", SuperblockField(root, "Mount count"));

        var result = Boot(["--disk", root, "--disk", $"{second},ro,id=second-disk"], "root=/dev/vda rw init=/init vmmtest=disk");

        Assert.Contains("virtio_blk virtio0: [vda]", result.Console);
        Assert.Contains("virtio_blk virtio1: [vdb]", result.Console);
        Assert.Contains("EXT4-fs (vda): mounted filesystem", result.Console);
        Assert.Contains("VFS: Mounted root (ext4 filesystem) on device 254:0", result.Console);
        AssertTheDiskTestPassed(result, root);
        // ext4 commits the superblock at a read-write mount: the count and time land in the image.
        Assert.Equal("1", SuperblockField(root, "Mount count"));
        Assert.NotEqual("n/a", SuperblockField(root, "Last mount time"));
        Assert.Equal(secondHashBefore, Sha256(second));
        output.WriteLine("evidence asserted: the kernel's read-write mount of vda; init read the host's file, wrote a 100,000-line " +
                         "pattern that read back equal from the disk after a read-only remount and dropped caches; exit code 33; " +
                         "on the host the image is e2fsck clean and holds the pattern and the guest's file; the read-only disk is unchanged");
    }

    /// <summary>A host block device as the root disk (a loop device here; an LVM volume or a DRBD device for users):
    /// the guest sees its whole size (not its inode's 0 bytes), mounts it, and its user space writes and reads back
    /// through it; the host finds the result in the device's backing file.</summary>
    [Fact]
    public void Ext4RootOnABlockDevice_TheGuestSeesItsSize_AndWritesAndReadsThroughIt()
    {
        string backing = MakeRootfs("backing.ext4");
        VmmProcess.Result result;
        using (var device = LoopDevice.Attach(backing))
            result = Boot(["--disk", device.Path], "root=/dev/vda rw init=/init vmmtest=disk");

        Assert.Contains("virtio_blk virtio0: [vda] 131072 512-byte logical blocks (67.1 MB/64.0 MiB)", result.Console);
        Assert.Contains("VFS: Mounted root (ext4 filesystem) on device 254:0", result.Console);
        AssertTheDiskTestPassed(result, backing);
        output.WriteLine("evidence asserted: a loop device as vda has its 64 MiB, is mounted read-write as root, and the guest's disk " +
                         "test passed on it; its backing file is e2fsck clean and holds what the guest wrote");
    }

    [Fact]
    public void ReadOnlyDisk_IsMountedReadOnlyAndLeftUnchanged()
    {
        string disk = MakeRootfs("readonly.ext4");
        string hashBefore = Sha256(disk);

        var result = Boot(["--disk", $"{disk},ro"], "root=/dev/vda rw init=/init");

        // Asked for rw, the kernel finds the device read-only (VIRTIO_BLK_F_RO) and falls back to ro; init runs from it.
        Assert.Contains("VFS: Mounted root (ext4 filesystem) readonly on device 254:0", result.Console);
        Assert.Contains("VMM-GUEST-INIT-OK", result.Console);
        Assert.Equal(ExitCodes.FromExitPort(0x10), result.ExitCode);
        Assert.Equal(hashBefore, Sha256(disk));
        Assert.Equal("0", SuperblockField(disk, "Mount count"));
    }

    /// <summary>The guest's vmmtest=disk passed, and the host's view of what it left in <paramref name="image"/> agrees:
    /// a clean file system holding exactly what was written.</summary>
    private void AssertTheDiskTestPassed(VmmProcess.Result result, string image)
    {
        Assert.Contains("VMM-GUEST-INIT-OK", result.Console);
        Assert.Contains("VMM-DISK read: known contents 6b1f", result.Console);
        Assert.Contains("VMM-TEST-PASSED disk", result.Console);
        Assert.Equal(ExitCodes.FromExitPort(0x10), result.ExitCode);
        var fsck = HostCommand.Run("e2fsck", "-f", "-n", image);
        output.WriteLine($"e2fsck -f -n (exit code {fsck.ExitCode}):\n{fsck.Output}");
        Assert.Equal(0, fsck.ExitCode);
        Assert.Equal(string.Concat(Enumerable.Range(1, 100_000).Select(i => $"{i}\n")), DebugfsCat(image, "/vmm-pattern"));
        Assert.StartsWith("written by the guest from 6.1", DebugfsCat(image, "/vmm-written-by-guest"));
    }

    private VmmProcess.Result Boot(string[] disks, string kernelOptions)
    {
        var result = VmmProcess.Run(
            ["run", "--kernel", GuestImages.Vmlinux, "--memory", "256M", .. disks,
             "--cmdline", $"{MachineConfig.DefaultCommandLine} loglevel=7 {kernelOptions}"],
            BootTimeout);
        output.WriteLine($"vmm exit code {result.ExitCode} after {result.Elapsed.TotalSeconds:F1} s");
        output.WriteLine("console:\n" + result.Console);
        output.WriteLine("vmm log:\n" + result.Log);
        return result;
    }

    private string MakeRootfs(string name)
    {
        string path = Path.Combine(_directory, name);
        HostCommand.Checked("bash", Path.Combine(RepositoryPaths.Root, "guest-images", "make-rootfs.sh"), path);
        return path;
    }

    private static string SuperblockField(string image, string field)
    {
        string text = HostCommand.Checked("dumpe2fs", "-h", image);
        string line = text.Split('\n').Single(l => l.StartsWith(field + ":", StringComparison.Ordinal));
        return line[(field.Length + 1)..].Trim();
    }

    private static string DebugfsCat(string image, string path) => HostCommand.Checked("debugfs", "-R", $"cat {path}", image);

    private static string Sha256(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
}
