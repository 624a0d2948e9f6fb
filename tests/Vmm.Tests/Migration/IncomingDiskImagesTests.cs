using System.Buffers.Binary;
using Vmm.Devices.Virtio;
using Vmm.Migration;
using Xunit;

namespace Vmm.Tests.Migration;

/// <summary>The target's side of a storage migration: images written unnamed, named only when complete and
/// durable, never replacing a file, and gone without a trace when the migration fails.</summary>
public sealed class IncomingDiskImagesTests : IDisposable
{
    private const long ImageBytes = 4L << 20;
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-incoming-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static BlockDiskConfig Disk(string path) => new(path, ReadOnly: false, Id: null);

    private IncomingDiskImages CreateOne(string sourcePath = "/var/lib/vms/root.img") =>
        IncomingDiskImages.Create(_directory, [Disk(sourcePath)], [ImageBytes]);

    private static byte[] Data(int disk, long offset, byte[] bytes)
    {
        var frame = new byte[MigrationChannel.DiskDataHeaderBytes + bytes.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)disk);
        BinaryPrimitives.WriteInt64LittleEndian(frame.AsSpan(4), offset);
        bytes.CopyTo(frame, MigrationChannel.DiskDataHeaderBytes);
        return frame;
    }

    private static byte[] Zero(int disk, long offset, long length)
    {
        var frame = new byte[20];
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)disk);
        BinaryPrimitives.WriteInt64LittleEndian(frame.AsSpan(4), offset);
        BinaryPrimitives.WriteInt64LittleEndian(frame.AsSpan(12), length);
        return frame;
    }

    [Fact]
    public void AnImage_HasNoNameUntilCommitted_ThenItsSourceFileNameAndItsContent()
    {
        byte[] block = VirtioBlockHarnessPattern(64 << 10);
        using (var images = CreateOne())
        {
            images.WriteData(Data(0, 1 << 20, block));
            Assert.Empty(Directory.GetFileSystemEntries(_directory));
            // The machine opens the image through its unnamed file while it arrives.
            using (var opened = File.OpenHandle(images.OpenPaths[0])) Assert.Equal(ImageBytes, RandomAccess.GetLength(opened));

            images.Commit();
            images.Keep();
        }
        string final = Path.Combine(_directory, "root.img");
        Assert.Equal([final], Directory.GetFileSystemEntries(_directory));
        byte[] content = File.ReadAllBytes(final);
        Assert.Equal(ImageBytes, content.Length);
        Assert.Equal(block, content.AsSpan(1 << 20, block.Length).ToArray());
        Assert.Equal([(1L << 20, (1L << 20) + block.Length)], DiskImageFiles.DataExtents(final));
    }

    [Fact]
    public void AZeroRange_BecomesAHole()
    {
        string final = Path.Combine(_directory, "root.img");
        using (var images = CreateOne())
        {
            images.WriteData(Data(0, 0, VirtioBlockHarnessPattern(128 << 10)));
            images.WriteZero(Zero(0, 0, 64 << 10));
            images.Commit();
            images.Keep();
        }
        Assert.Equal([(64L << 10, 128L << 10)], DiskImageFiles.DataExtents(final));
        Assert.All(File.ReadAllBytes(final).AsSpan(0, 64 << 10).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public void AFailedMigration_LeavesNothing_BeforeOrAfterCommit()
    {
        using (var images = CreateOne()) images.WriteData(Data(0, 0, new byte[4096]));
        Assert.Empty(Directory.GetFileSystemEntries(_directory));

        using (var images = CreateOne())
        {
            images.Commit();
            Assert.Single(Directory.GetFileSystemEntries(_directory));
            // Disposed without Keep: the VM never ran here (say the source did not hear that it resumed).
        }
        Assert.Empty(Directory.GetFileSystemEntries(_directory));
    }

    [Fact]
    public void AnExistingFile_IsNeverReplaced()
    {
        string final = Path.Combine(_directory, "root.img");
        File.WriteAllText(final, "precious");

        var refused = Assert.Throws<MigrationException>(() => CreateOne());

        Assert.Contains("exists already", refused.Message);
        Assert.Equal("precious", File.ReadAllText(final));
    }

    [Fact]
    public void AFileCreatedMeanwhile_IsNotReplacedAtCommit()
    {
        string final = Path.Combine(_directory, "root.img");
        using var images = CreateOne();
        File.WriteAllText(final, "precious");

        var refused = Assert.Throws<MigrationException>(images.Commit);

        Assert.Contains("appeared while the disk was copied", refused.Message);
        Assert.Equal("precious", File.ReadAllText(final));
    }

    [Fact]
    public void TwoDisksWithTheSameFileName_AreRefused()
    {
        var refused = Assert.Throws<MigrationException>(() =>
            IncomingDiskImages.Create(_directory, [Disk("/a/disk.img"), Disk("/b/disk.img")], [ImageBytes, ImageBytes]));
        Assert.Contains("two of the VM's disk images are named disk.img", refused.Message);
        Assert.Empty(Directory.GetFileSystemEntries(_directory));
    }

    [Theory]
    [InlineData(1, 0L, 4096)]                    // a disk the VM does not have
    [InlineData(0, -4096L, 4096)]                // before the image
    [InlineData(0, ImageBytes - 2048, 4096)]     // across its end
    [InlineData(0, long.MaxValue - 100, 4096)]   // an offset that would overflow
    public void HostileDataFrames_AreRefused(int disk, long offset, int length)
    {
        using var images = CreateOne();
        Assert.Throws<MigrationException>(() => images.WriteData(Data(disk, offset, new byte[length])));
    }

    [Theory]
    [InlineData(0L, ImageBytes + 512)]
    [InlineData(0L, -1L)]
    [InlineData(ImageBytes, 512L)]
    public void HostileZeroFrames_AreRefused(long offset, long length)
    {
        using var images = CreateOne();
        Assert.Throws<MigrationException>(() => images.WriteZero(Zero(0, offset, length)));
        Assert.Throws<MigrationException>(() => images.WriteZero(new byte[19]));
    }

    private static byte[] VirtioBlockHarnessPattern(int bytes) => Vmm.Tests.Devices.Virtio.VirtioBlockHarness.Pattern(bytes);
}
