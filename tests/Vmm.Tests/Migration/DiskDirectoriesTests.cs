using Vmm.Migration;
using Vmm.Devices.Virtio;
using Vmm.State;
using Xunit;

namespace Vmm.Tests.Migration;

/// <summary>An incoming VM's disk paths come from the network; --disk-dir bounds them. A symlinked directory inside
/// the allowed one once let a path out (only its last component was resolved: issue 18, defect 10).</summary>
public sealed class DiskDirectoriesTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("vmm-diskdirs-").FullName;
    private readonly string _allowed, _outside;

    public DiskDirectoriesTests()
    {
        _allowed = Directory.CreateDirectory(Path.Combine(_root, "allowed")).FullName;
        _outside = Directory.CreateDirectory(Path.Combine(_root, "outside")).FullName;
        File.WriteAllText(Path.Combine(_outside, "secret.img"), "not yours");
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static MachineDescription WithDisk(string path) => new(64UL << 20, 1, [new BlockDiskConfig(path, false, null)], []);

    [Fact]
    public void ADiskBehindASymlinkedDirectory_ThatLeadsOut_IsRefused()
    {
        Directory.CreateSymbolicLink(Path.Combine(_allowed, "escape"), _outside);
        var error = Assert.Throws<ConfigurationException>(() =>
            DiskDirectories.CheckAllowed(WithDisk(Path.Combine(_allowed, "escape", "secret.img")), [_allowed]));
        Assert.Contains("outside the directories this target serves", error.Message);
    }

    [Fact]
    public void ASymlinkedImageThatLeadsOut_IsRefused()
    {
        File.CreateSymbolicLink(Path.Combine(_allowed, "disk.img"), Path.Combine(_outside, "secret.img"));
        Assert.Throws<ConfigurationException>(() => DiskDirectories.CheckAllowed(WithDisk(Path.Combine(_allowed, "disk.img")), [_allowed]));
    }

    [Fact]
    public void DotDotOut_IsRefused() =>
        Assert.Throws<ConfigurationException>(() => DiskDirectories.CheckAllowed(WithDisk(Path.Combine(_allowed, "..", "outside", "secret.img")), [_allowed]));

    /// <summary>What is checked is what is opened: the disk comes back at its resolved path.</summary>
    [Fact]
    public void ADiskInsideReachedThroughASymlinkedDiskDir_IsAllowed_AtItsResolvedPath()
    {
        string image = Path.Combine(_allowed, "vm.img");
        File.WriteAllText(image, "");
        string linkedDir = Path.Combine(_root, "linked");
        Directory.CreateSymbolicLink(linkedDir, _allowed);

        var checkedDescription = DiskDirectories.CheckAllowed(WithDisk(Path.Combine(linkedDir, "vm.img")), [linkedDir]);

        Assert.Equal(DiskDirectories.RealPath(image), checkedDescription.Disks[0].Path);
    }

    [Fact]
    public void AnImageNotCopiedHereYet_IsAllowedInsideTheDirectory() =>
        Assert.Equal(Path.Combine(DiskDirectories.RealPath(_allowed), "new.img"),
            DiskDirectories.CheckAllowed(WithDisk(Path.Combine(_allowed, "new.img")), [_allowed]).Disks[0].Path);

    [Fact]
    public void ASymlinkLoop_IsRefusedSayingSo()
    {
        File.CreateSymbolicLink(Path.Combine(_allowed, "a"), Path.Combine(_allowed, "b"));
        File.CreateSymbolicLink(Path.Combine(_allowed, "b"), Path.Combine(_allowed, "a"));
        var error = Assert.Throws<ConfigurationException>(() => DiskDirectories.CheckAllowed(WithDisk(Path.Combine(_allowed, "a")), [_allowed]));
        Assert.Contains("too many levels of symbolic links", error.Message);
    }
}
