using System.Security.Cryptography;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>virtio-blk with the guest-images kernel: an ext4 root on vda mounted read-write, and a
/// read-only disk the kernel must refuse to write. On the nested backend the proof is what the guest
/// kernel does (its log, and the mount it records in the image's superblock); where user space runs,
/// the disk's init also reads a file the host put there and writes one the host then finds.</summary>
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
        bool userSpaceRuns = !NestedKvm.IsActiveOnThisHost();

        var result = Boot(["--disk", root, "--disk", $"{second},ro,id=second-disk"], "root=/dev/vda rw init=/init");

        Assert.Contains("virtio_blk virtio0: [vda]", result.Console);
        Assert.Contains("virtio_blk virtio1: [vdb]", result.Console);
        Assert.Contains("EXT4-fs (vda): mounted filesystem", result.Console);
        Assert.Contains("VFS: Mounted root (ext4 filesystem) on device 254:0", result.Console);
        Assert.Contains("Run /init as init process", result.Console);
        // ext4 commits the superblock at a read-write mount: the count and time land in the image.
        Assert.Equal("1", SuperblockField(root, "Mount count"));
        Assert.NotEqual("n/a", SuperblockField(root, "Last mount time"));
        Assert.Equal(secondHashBefore, Sha256(second));
        if (userSpaceRuns)
        {
            output.WriteLine("evidence asserted: the kernel's mount, the superblock's mount count, and init's read and write of files (hardware KVM)");
            Assert.Contains("VMM-DISK-INIT-OK read: known contents 6b1f", result.Console);
            Assert.StartsWith("written by the guest from 6.1", DebugfsCat(root, "/vmm-written-by-guest"));
            Assert.Equal(ExitCodes.FromExitPort(0x10), result.ExitCode);
        }
        else
        {
            output.WriteLine("evidence asserted: the kernel's read-write ext4 mount of vda and the mount it recorded in the image " +
                             "(nested kvm_pvm: guest user space cannot make system calls, so init's file reads and writes cannot happen here)");
            Assert.Equal(ExitCodes.GuestFinished, result.ExitCode);
        }
    }

    [Fact]
    public void ReadOnlyDisk_IsMountedReadOnlyAndLeftUnchanged()
    {
        string disk = MakeRootfs("readonly.ext4");
        string hashBefore = Sha256(disk);

        var result = Boot(["--disk", $"{disk},ro"], "root=/dev/vda rw init=/init");

        // Asked for rw, the kernel finds the device read-only (VIRTIO_BLK_F_RO) and falls back to ro.
        Assert.Contains("VFS: Mounted root (ext4 filesystem) readonly on device 254:0", result.Console);
        Assert.Equal(hashBefore, Sha256(disk));
        Assert.Equal("0", SuperblockField(disk, "Mount count"));
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
