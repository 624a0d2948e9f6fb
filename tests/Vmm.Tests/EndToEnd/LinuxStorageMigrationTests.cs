using System.Text.RegularExpressions;
using Vmm.Migration;
using Vmm.Tests.Migration;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>Storage migration of the guest-images Linux guest while its kernel mounts (and so writes) its ext4 root:
/// the migration starts once the kernel has probed its disk, and its first pass is answered only once the kernel
/// has mounted the root read-write, so the mount's writes land in an image already being copied. The target
/// keeps the VM paused on arrival: its copy must then be byte-identical to the source's image at the pause, the
/// mount recorded in it; resumed, the kernel goes on booting from the copy, and its user space runs from it to the
/// end: init (guest-images/init) prints its marker and ends the VM through the exit port.</summary>
[Trait("Category", "LinuxBoot")]
[Collection(LinuxGuests.Collection)]
public sealed class LinuxStorageMigrationTests(ITestOutputHelper output) : IDisposable
{
    private const string ProbedLine = "virtio_blk virtio0: [vda]", MountedLine = "EXT4-fs (vda): mounted filesystem", InitLine = "Run /init as init process";
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(90), BootPatience = TimeSpan.FromMinutes(10);
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-lsmig-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void GuestKernel_WritingItsExt4Root_IsMigratedWithItsDisk_AndBootsOnFromTheCopy()
    {
        string sourceDirectory = Directory.CreateDirectory(Path.Combine(_directory, "source")).FullName;
        string targetDirectory = Directory.CreateDirectory(Path.Combine(_directory, "target")).FullName;
        string root = Path.Combine(sourceDirectory, "root.ext4"), copy = Path.Combine(targetDirectory, "root.ext4");
        HostCommand.Checked("bash", Path.Combine(RepositoryPaths.Root, "guest-images", "make-rootfs.sh"), root);
        string socket = Path.Combine(_directory, "source.sock"), targetSocket = Path.Combine(_directory, "target.sock");

        using var target = new RunningVmm(["migrate-receive", "-v", "--listen", "127.0.0.1:0", "--once", "--disk-dir", targetDirectory, "--paused", "--api-socket", targetSocket]);
        Match? listening = null;
        Assert.True(target.WaitFor((_, log) => (listening = Regex.Match(log, @"waiting for migrations on (\S+:\d+)")).Success, Patience), $"the target did not listen\n{target}");
        // rootdelay: the kernel waits 10 s between probing its disk and mounting it, so the copy has begun (its
        // dirty tracking is on: checked below) before the mount writes.
        using var source = new RunningVmm(
            ["run", "-v", "--kernel", GuestImages.Vmlinux, "--memory", "256M", "--disk", root, "--api-socket", socket,
             "--cmdline", $"{MachineConfig.DefaultCommandLine} loglevel=7 root=/dev/vda rw rootdelay=10 init=/init"]);
        Assert.True(source.WaitForConsole(ProbedLine, BootPatience), $"the source guest never printed \"{ProbedLine}\"\n{source}");

        bool mountedBeforeTheCopy = false;
        using var proxy = new GatedMigrationProxy(int.Parse(listening!.Groups[1].Value.Split(':')[^1]), (answer, pass) =>
        {
            if (answer == MigrationFrameType.Ready)
            {
                mountedBeforeTheCopy = source.Console.Contains(MountedLine);
            }
            else if (answer == MigrationFrameType.PassDone && pass == 1)
            {
                Assert.True(source.WaitForConsole(MountedLine, BootPatience), $"the source kernel never mounted its root\n{source}");
            }
        });
        using var ctl = new RunningVmm(["ctl", "--socket", socket, "migrate", "--to", proxy.Address, "--copy-disks", "--force"]);
        int? ctlExit = ctl.WaitForExit(BootPatience);
        bool arrived = target.WaitFor((_, log) => log.Contains("paused until 'vmm ctl resume'"), Patience);
        int? sourceExit = source.WaitForExit(Patience);
        output.WriteLine($"--- ctl ---\n{ctl}\n--- source ---\n{source}");

        Assert.False(mountedBeforeTheCopy, "the kernel mounted its root before the copy began: the test did not test a disk written during the copy");
        Assert.Equal(0, ctlExit);
        Assert.True(arrived, target.ToString());
        Assert.Equal(0, sourceExit);
        // The guest's writes were seen and sent again after the first pass.
        Assert.Matches("\"dirtyDiskBytes\":[1-9]", ctl.Console);
        Assert.Equal(File.ReadAllBytes(root), File.ReadAllBytes(copy));
        Assert.Equal("1", HostCommand.Checked("dumpe2fs", "-h", copy).Split('\n').First(l => l.StartsWith("Mount count:")).Split(':')[1].Trim());
        // Holes stay holes: the copy allocates no more than the image it copies.
        Assert.True(DiskImageFiles.DataExtents(copy).Sum(e => e.End - e.Start) <= DiskImageFiles.DataExtents(root).Sum(e => e.End - e.Start));

        using var resume = new RunningVmm(["ctl", "--socket", targetSocket, "resume"]);
        Assert.Equal(0, resume.WaitForExit(Patience));
        int? targetExit = target.WaitForExit(BootPatience);
        output.WriteLine($"--- target (exit code {targetExit}) ---\n{target}");
        Assert.Contains(InitLine, target.Console);
        Assert.Contains("VMM-GUEST-INIT-OK", target.Console);
        Assert.Equal(ExitCodes.FromExitPort(0x10), targetExit);
        Assert.DoesNotContain(ProbedLine, target.Console);
    }
}
