using System.Runtime.InteropServices;
using Vmm.Kvm.Interop;

namespace Vmm.Tests.Migration;

/// <summary>What the storage-migration tests look at in an image file: its data extents (SEEK_DATA/SEEK_HOLE)
/// and how much of it is allocated.</summary>
internal static class DiskImageFiles
{
    public static List<(long Start, long End)> DataExtents(string path)
    {
        using var file = File.OpenHandle(path);
        int fd = (int)file.DangerousGetHandle();
        long size = RandomAccess.GetLength(file);
        var extents = new List<(long, long)>();
        for (long at = 0; at < size;)
        {
            long start = Libc.Lseek(fd, at, Libc.SEEK_DATA);
            if (start < 0)
            {
                if (Marshal.GetLastPInvokeError() == Libc.ENXIO) break;
                throw new IOException($"SEEK_DATA on {path}: errno {Marshal.GetLastPInvokeError()}");
            }
            long end = Libc.Lseek(fd, start, Libc.SEEK_HOLE);
            extents.Add((start, end));
            at = end;
        }
        return extents;
    }

    /// <summary>Whether any byte in [start, end) is allocated.</summary>
    public static bool HasData(string path, long start, long end) => DataExtents(path).Any(e => e.Start < end && e.End > start);

    /// <summary>A sparse image of <paramref name="bytes"/> with the given ranges written.</summary>
    public static void CreateSparse(string path, long bytes, params (long Offset, byte[] Data)[] ranges)
    {
        using var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite);
        RandomAccess.SetLength(file, bytes);
        foreach (var (offset, data) in ranges) RandomAccess.Write(file, data, offset);
    }
}
