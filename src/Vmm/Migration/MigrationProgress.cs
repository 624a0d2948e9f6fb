namespace Vmm.Migration;

/// <summary>One copy pass, as reported while the migration runs.</summary>
public sealed record MigrationPass(
    int Number, long PagesSent, long ZeroPages, long BytesSent, double Seconds, double BandwidthMiBps,
    long DirtyPagesAfter, double DirtyRateMiBps, double EstimatedDowntimeMs, int ThrottlePercent,
    long DiskBytesSent = 0, long DirtyDiskBytesAfter = 0)
{
    public override string ToString() =>
        $"pass {Number}: {PagesSent} pages ({ZeroPages} zero){(DiskBytesSent > 0 ? $", {DiskBytesSent / 1048576.0:F1} MiB of disk" : "")}, {BytesSent / 1048576.0:F1} MiB in {Seconds * 1000:F0} ms, " +
        $"{BandwidthMiBps:F0} MiB/s; dirty after: {DirtyPagesAfter} pages ({DirtyRateMiBps:F1} MiB/s){(DirtyDiskBytesAfter > 0 ? $", {DirtyDiskBytesAfter >> 10} KiB of disk" : "")}, " +
        $"estimated downtime {EstimatedDowntimeMs:F1} ms{(ThrottlePercent > 0 ? $", vCPUs throttled {ThrottlePercent}%" : "")}";
}

/// <summary>The end of a migration that succeeded.</summary>
public sealed record MigrationReport(
    string Target, int Passes, long TotalBytes, long PagesSent, double TotalMs, double DowntimeMs, bool Forced, long DiskBytes = 0)
{
    public override string ToString() =>
        $"migrated to {Target}: {Passes} passes, {TotalBytes / 1048576.0:F1} MiB, {PagesSent} pages, {(DiskBytes > 0 ? $"{DiskBytes / 1048576.0:F1} MiB of disk images, " : "")}" +
        $"total {TotalMs:F0} ms, downtime {DowntimeMs:F1} ms{(Forced ? " (forced past the downtime limit)" : "")}";
}
