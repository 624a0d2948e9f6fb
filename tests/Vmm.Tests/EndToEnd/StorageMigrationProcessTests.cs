using Vmm.Migration;
using Vmm.Tests.Migration;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>Storage migration between two `vmm` processes (<c>vmm ctl migrate --copy-disks</c> into a target's
/// <c>--disk-dir</c>), with the memory-dirtying guest and a sparse disk image: the copy is byte-identical with the
/// same holes, a target that dies leaves no partial image, and an existing file is never replaced. (What the
/// guest writes to the disk during the copy: DiskCopyTests, and LinuxStorageMigrationTests with a real kernel.)</summary>
[Trait("Category", "Process")]
public sealed class StorageMigrationProcessTests(ITestOutputHelper output) : MigrationProcessTestBase(output)
{
    private const long ImageBytes = 64L << 20;

    private (string Image, string TargetDirectory) CreateImage()
    {
        string sourceDirectory = Directory.CreateDirectory(Path.Combine(_directory, "source")).FullName;
        string targetDirectory = Directory.CreateDirectory(Path.Combine(_directory, "target")).FullName;
        string image = Path.Combine(sourceDirectory, "disk.img");
        DiskImageFiles.CreateSparse(image, ImageBytes,
            (1L << 20, Devices.Virtio.VirtioBlockHarness.Pattern(2 << 20, seed: 5)),
            (20L << 20, new byte[1 << 20]), // allocated zeros: the copy need not allocate them
            (40L << 20, Devices.Virtio.VirtioBlockHarness.Pattern(64 << 10, seed: 6)));
        return (image, targetDirectory);
    }

    [Fact]
    public void CopyDisks_TheTargetHasAByteIdenticalImageWithItsHoles_AndTheGuestGoesOnThere()
    {
        var g = Guest();
        var (image, targetDirectory) = CreateImage();
        string socket = Path.Combine(_directory, "src.sock"), targetSocket = Path.Combine(_directory, "dst.sock");
        // Paused on arrival: the copy is looked at exactly as it arrived, before the guest runs on it.
        var (target, listen) = StartTarget(extra: ["--disk-dir", targetDirectory, "--paused", "--api-socket", targetSocket]);
        using var _ = target;
        using var source = StartSource(g, socket, extra: ["--disk", image]);
        using var ctl = Migrate(socket, listen, "--copy-disks", "--force");
        Assert.Equal(0, ctl.WaitForExit(Patience));
        Assert.True(target.WaitFor((_, log) => log.Contains("paused until 'vmm ctl resume'"), Patience), target.ToString());
        Assert.Equal(0, source.WaitForExit(Patience));

        string copy = Path.Combine(targetDirectory, "disk.img");
        Assert.Contains("\"diskMiBSent\"", ctl.Console);
        Assert.Equal(File.ReadAllBytes(image), File.ReadAllBytes(copy));
        Assert.Equal([(1L << 20, 3L << 20), (40L << 20, (40L << 20) + (64 << 10))], DiskImageFiles.DataExtents(copy));

        using var resume = new RunningVmm(["ctl", "--socket", targetSocket, "resume"]);
        Assert.Equal(0, resume.WaitForExit(Patience));
        var (_, _, targetExit) = WaitForAll(resume, source, target);
        Assert.Equal(GuestSuccess, targetExit);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
    }

    /// <summary>A host block device (a loop device here; an LVM volume or a DRBD device for users) as the source's disk:
    /// its size is the device's, not its inode's 0 bytes, and the target writes its bytes into a file in --disk-dir.</summary>
    [Fact]
    public void CopyDisks_FromABlockDevice_TheTargetHasItsBytesInAFile_AndTheGuestGoesOnThere()
    {
        var g = Guest();
        var (image, targetDirectory) = CreateImage();
        using var device = LoopDevice.Attach(image);
        string socket = Path.Combine(_directory, "src.sock"), targetSocket = Path.Combine(_directory, "dst.sock");
        var (target, listen) = StartTarget(extra: ["--disk-dir", targetDirectory, "--paused", "--api-socket", targetSocket]);
        using var _ = target;
        using var source = StartSource(g, socket, extra: ["--disk", device.Path]);
        using var ctl = Migrate(socket, listen, "--copy-disks", "--force");
        Assert.True(ctl.WaitForExit(Patience) == 0, $"{ctl}\n{source}\n{target}");
        Assert.True(target.WaitFor((_, log) => log.Contains("paused until 'vmm ctl resume'"), Patience), target.ToString());
        Assert.Equal(0, source.WaitForExit(Patience));

        string copy = Path.Combine(targetDirectory, Path.GetFileName(device.Path));
        Assert.Equal(ImageBytes, new FileInfo(copy).Length);
        Assert.Equal(File.ReadAllBytes(image), File.ReadAllBytes(copy));

        using var resume = new RunningVmm(["ctl", "--socket", targetSocket, "resume"]);
        Assert.Equal(0, resume.WaitForExit(Patience));
        var (_, _, targetExit) = WaitForAll(resume, source, target);
        Assert.Equal(GuestSuccess, targetExit);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
    }

    [Fact]
    public void TargetKilledMidCopy_TheSourceRunsOn_AndNoPartialImageIsLeft()
    {
        var g = Guest();
        var (image, targetDirectory) = CreateImage();
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(extra: ["--disk-dir", targetDirectory]);
        using var _ = target;
        using var source = StartSource(g, socket, extra: ["--disk", image]);
        string[]? duringCopy = null;
        // The target has written the whole image once when it answers the first pass: it dies right then.
        using var proxy = new GatedMigrationProxy(PortOf(listen), (answer, pass) =>
        {
            if (answer != MigrationFrameType.PassDone || pass != 1) return;
            duringCopy = Directory.GetFileSystemEntries(targetDirectory);
            target.Kill();
            target.WaitForExit(Patience);
        });
        using var ctl = Migrate(socket, proxy.Address, "--copy-disks", "--downtime-ms", "0", "--max-passes", "100000");
        var (ctlExit, sourceExit, _) = WaitForAll(ctl, source, target: null);

        AssertFailedAndTheGuestRanOnHere(g, ctlExit, ctl, "keeps running here", sourceExit, source);
        Assert.NotNull(duringCopy);
        Assert.Empty(duringCopy);
        Assert.Empty(Directory.GetFileSystemEntries(targetDirectory));
    }

    [Fact]
    public void CopyDisks_OntoAnExistingFile_IsRefused_TheFileIsUntouched_AndTheVmStaysHere()
    {
        var g = Guest();
        var (image, targetDirectory) = CreateImage();
        string existing = Path.Combine(targetDirectory, "disk.img");
        File.WriteAllText(existing, "precious");
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(extra: ["--disk-dir", targetDirectory]);
        using var _ = target;
        using var source = StartSource(g, socket, extra: ["--disk", image]);
        using var ctl = Migrate(socket, listen, "--copy-disks");
        var (ctlExit, sourceExit, _) = WaitForAll(ctl, source, target: null);

        AssertFailedAndTheGuestRanOnHere(g, ctlExit, ctl, "exists already", sourceExit, source);
        Assert.Equal("precious", File.ReadAllText(existing));
        Assert.Equal([existing], Directory.GetFileSystemEntries(targetDirectory));
    }
}
