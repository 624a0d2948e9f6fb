using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using Vmm.Devices.Virtio;
using Vmm.Kvm.Interop;

namespace Vmm.Migration;

/// <summary>The target side of a storage migration: each disk image is written into an unnamed file (O_TMPFILE)
/// in the target's disk directory, under the source image's file name only once the whole VM has arrived and the
/// image is on stable storage. A migration that fails, or a target that is killed, leaves no partial image
/// behind: an unnamed file goes with its last descriptor. Where the file system has no O_TMPFILE (NFS, say), a
/// hidden named file stands in, deleted on failure. An image name that exists already is never overwritten.</summary>
public sealed class IncomingDiskImages : IDisposable
{
    /// <summary>rw-r-----: an image may hold anything the guest stored.</summary>
    private const uint ImageMode = 0b110_100_000;

    private readonly List<Image> _images = [];
    /// <summary>The images that have their final name (<see cref="Commit"/>).</summary>
    private readonly List<Image> _linked = [];
    /// <summary>The VM runs on the images: they stay.</summary>
    private bool _kept;

    private sealed record Image(string FinalPath, string? TemporaryPath, SafeFileHandle File, long Bytes)
    {
        /// <summary>Where the image can be opened by path while it has no name of its own.</summary>
        public string OpenPath => TemporaryPath ?? $"/proc/self/fd/{File.DangerousGetHandle()}";
    }

    /// <summary>Creates one empty (all-hole) image per disk in <paramref name="directory"/>, named after the source's
    /// image file; refuses names that are not plain file names, names that repeat, and names that exist already.</summary>
    public static IncomingDiskImages Create(string directory, IReadOnlyList<BlockDiskConfig> disks, IReadOnlyList<long> sizes)
    {
        var images = new IncomingDiskImages();
        try
        {
            var names = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < disks.Count; i++)
            {
                string name = Path.GetFileName(disks[i].Path);
                if (name.Length == 0 || name is "." or "..")
                    throw new MigrationException($"the disk image {disks[i].Path} has no file name to copy it under");
                if (!names.Add(name))
                    throw new MigrationException($"two of the VM's disk images are named {name}; a copy keeps the file names, so they would collide in {directory}");
                string final = Path.Combine(directory, name);
                if (File.Exists(final) || Directory.Exists(final))
                    throw new MigrationException($"{final} exists already; a copied disk image never replaces a file (move it away, or migrate with shared storage)");
                images._images.Add(CreateUnnamed(directory, final, sizes[i]));
            }
            return images;
        }
        catch
        {
            images.Dispose();
            throw;
        }
    }

    private static Image CreateUnnamed(string directory, string final, long bytes)
    {
        int fd = Libc.Open(directory, Libc.O_TMPFILE | Libc.O_RDWR | Libc.O_CLOEXEC, ImageMode);
        string? temporary = null;
        if (fd < 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (errno is not (Libc.EOPNOTSUPP or Libc.EISDIR or Libc.EINVAL))
                throw new MigrationException($"cannot create a disk image in {directory}: {Libc.Describe(errno)}");
            temporary = Path.Combine(directory, $".{Path.GetFileName(final)}.vmm-incoming-{Environment.ProcessId}-{Guid.NewGuid():N}");
            fd = Libc.Open(temporary, Libc.O_RDWR | Libc.O_CLOEXEC | Libc.O_CREAT | Libc.O_EXCL, ImageMode);
            if (fd < 0) throw new MigrationException($"cannot create the disk image {temporary}: {Libc.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
        }
        var file = new SafeFileHandle(fd, ownsHandle: true);
        var image = new Image(final, temporary, file, bytes);
        try
        {
            RandomAccess.SetLength(file, bytes);
        }
        catch (IOException e)
        {
            Discard(image);
            throw new MigrationException($"cannot size the disk image for {final} to {bytes} bytes: {e.Message}", e);
        }
        return image;
    }

    /// <summary>Where each disk is opened while it arrives (its final path does not exist yet).</summary>
    public IReadOnlyList<string> OpenPaths => _images.Select(i => i.OpenPath).ToArray();

    /// <summary>Each disk's path once the migration is complete.</summary>
    public IReadOnlyList<string> FinalPaths => _images.Select(i => i.FinalPath).ToArray();

    /// <summary>Writes a DiskData frame's bytes into its image.</summary>
    public void WriteData(ReadOnlySpan<byte> payload)
    {
        var (image, offset) = LocateData(payload);
        try
        {
            RandomAccess.Write(image.File, payload[MigrationChannel.DiskDataHeaderBytes..], offset);
        }
        catch (IOException e)
        {
            throw new MigrationException($"cannot write the disk image for {image.FinalPath}: {e.Message}", e);
        }
    }

    /// <summary>Makes a DiskZero frame's range a hole (or zeros, where holes cannot be punched).</summary>
    public void WriteZero(ReadOnlySpan<byte> payload)
    {
        var (image, offset, length) = LocateZero(payload);
        int fd = (int)image.File.DangerousGetHandle();
        if (Libc.Fallocate(fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, length) == 0) return;
        try
        {
            byte[] zeros = new byte[Math.Min(length, MigrationChannel.MaxDiskDataBytes)];
            for (long done = 0; done < length; done += zeros.Length)
                RandomAccess.Write(image.File, zeros.AsSpan(0, (int)Math.Min(zeros.Length, length - done)), offset + done);
        }
        catch (IOException e)
        {
            throw new MigrationException($"cannot write the disk image for {image.FinalPath}: {e.Message}", e);
        }
    }

    /// <summary>Checks a DiskData or DiskZero frame without writing it: a standby applies an epoch's frames only
    /// once the whole epoch is in, and then nothing may fail half way.</summary>
    public void Check(MigrationFrameType type, ReadOnlySpan<byte> payload)
    {
        if (type == MigrationFrameType.DiskData) LocateData(payload);
        else LocateZero(payload);
    }

    private (Image Image, long Offset) LocateData(ReadOnlySpan<byte> payload) =>
        Locate(payload, MigrationChannel.DiskDataHeaderBytes, payload.Length - MigrationChannel.DiskDataHeaderBytes, "DiskData");

    private (Image Image, long Offset, long Length) LocateZero(ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 20) throw new MigrationException($"migration stream: a DiskZero frame of {payload.Length} bytes (it takes 20)");
        long length = BinaryPrimitives.ReadInt64LittleEndian(payload[12..]);
        var (image, offset) = Locate(payload, 20, length, "DiskZero");
        return (image, offset, length);
    }

    /// <summary>The image and offset a frame names, with the range checked against the image's size.</summary>
    private (Image Image, long Offset) Locate(ReadOnlySpan<byte> payload, int headerBytes, long length, string frame)
    {
        if (payload.Length < headerBytes) throw new MigrationException($"migration stream: a {frame} frame of {payload.Length} bytes");
        uint disk = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        long offset = BinaryPrimitives.ReadInt64LittleEndian(payload[4..]);
        if (disk >= _images.Count) throw new MigrationException($"migration stream: a {frame} frame for disk {disk}; the VM has {_images.Count} copied disks");
        var image = _images[(int)disk];
        if (offset < 0 || length < 0 || length > MigrationChannel.MaxDiskDataBytes || offset > image.Bytes - length)
            throw new MigrationException($"migration stream: a {frame} frame for bytes {offset}+{length} of disk {disk}, which has {image.Bytes}");
        return (image, offset);
    }

    /// <summary>Puts every image on stable storage and gives it its name; an existing name is never replaced.
    /// Until <see cref="Keep"/>, <see cref="Dispose"/> still removes them.</summary>
    public void Commit()
    {
        foreach (var image in _images)
        {
            if (Libc.Fsync((int)image.File.DangerousGetHandle()) != 0)
                throw new MigrationException($"cannot make the disk image for {image.FinalPath} durable: {Libc.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
        }
        foreach (var image in _images)
        {
            int result = image.TemporaryPath is { } temporary
                ? Libc.Linkat(Libc.AT_FDCWD, temporary, Libc.AT_FDCWD, image.FinalPath, 0)
                : Libc.Linkat(Libc.AT_FDCWD, image.OpenPath, Libc.AT_FDCWD, image.FinalPath, Libc.AT_SYMLINK_FOLLOW);
            if (result != 0)
            {
                int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                throw new MigrationException(errno == Libc.EEXIST
                    ? $"{image.FinalPath} appeared while the disk was copied; a copied disk image never replaces a file"
                    : $"cannot name the disk image {image.FinalPath}: {Libc.Describe(errno)}");
            }
            _linked.Add(image);
            if (image.TemporaryPath is { } named) File.Delete(named);
        }
        foreach (string directory in _images.Select(i => Path.GetDirectoryName(i.FinalPath)!).Distinct())
            SyncDirectory(directory);
    }

    /// <summary>The new names must survive a crash of this host too.</summary>
    private static void SyncDirectory(string directory)
    {
        int fd = Libc.Open(directory, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC);
        if (fd < 0) return;
        Libc.Fsync(fd);
        Libc.Close(fd);
    }

    /// <summary>The VM runs on the committed images now: <see cref="Dispose"/> keeps them.</summary>
    public void Keep() => _kept = true;

    /// <summary>Closes the images; unless they were kept, removes every trace of them, named or not.</summary>
    public void Dispose()
    {
        foreach (var image in _images)
        {
            if (_kept) image.File.Dispose();
            else Discard(image);
        }
        if (!_kept)
            foreach (var image in _linked)
            {
                try { File.Delete(image.FinalPath); }
                catch (IOException) { }
            }
        _images.Clear();
    }

    private static void Discard(Image image)
    {
        image.File.Dispose();
        if (image.TemporaryPath is { } temporary)
        {
            try { File.Delete(temporary); }
            catch (IOException) { }
        }
    }
}
