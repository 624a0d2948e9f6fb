namespace Vmm.Migration;

/// <summary>One copy pass, as reported while the migration runs.</summary>
public sealed record MigrationPass(
    int Number, long PagesSent, long ZeroPages, long BytesSent, double Seconds, double BandwidthMiBps,
    long DirtyPagesAfter, double DirtyRateMiBps, double EstimatedDowntimeMs, int ThrottlePercent)
{
    public override string ToString() =>
        $"pass {Number}: {PagesSent} pages ({ZeroPages} zero), {BytesSent / 1048576.0:F1} MiB in {Seconds * 1000:F0} ms, " +
        $"{BandwidthMiBps:F0} MiB/s; dirty after: {DirtyPagesAfter} pages ({DirtyRateMiBps:F1} MiB/s), " +
        $"estimated downtime {EstimatedDowntimeMs:F1} ms{(ThrottlePercent > 0 ? $", vCPUs throttled {ThrottlePercent}%" : "")}";
}

/// <summary>The end of a migration that succeeded.</summary>
public sealed record MigrationReport(
    string Target, int Passes, long TotalBytes, long PagesSent, double TotalMs, double DowntimeMs, bool Forced)
{
    public override string ToString() =>
        $"migrated to {Target}: {Passes} passes, {TotalBytes / 1048576.0:F1} MiB, {PagesSent} pages, " +
        $"total {TotalMs:F0} ms, downtime {DowntimeMs:F1} ms{(Forced ? " (forced past the downtime limit)" : "")}";
}
