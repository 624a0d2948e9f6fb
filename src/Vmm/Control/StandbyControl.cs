using Vmm.Diagnostics;
using Vmm.Replication;

namespace Vmm.Control;

/// <summary>A standby's control socket while it stands by: <c>status</c> and <c>failover</c>.</summary>
public static class StandbyControl
{
    public static JsonLineServer Start(StandbyDaemon standby, string path, Logger log) =>
        JsonLineServer.Start(path, (request, _) => Handle(standby, request), log, "standby-control");

    private static byte[] Handle(StandbyDaemon standby, ReadOnlySpan<byte> request)
    {
        if (JsonAnswers.Parse(request, out byte[] malformed) is not var (_, command)) return malformed;
        return command switch
        {
            "status" => Status(standby.Status()),
            "failover" => standby.Failover() is { } refusal ? JsonAnswers.Error(refusal) : Status(standby.Status()),
            _ => JsonAnswers.Error($"unknown command '{command}' for a standby (expected status or failover)"),
        };
    }

    private static byte[] Status(StandbyStatus status) => JsonAnswers.Json(writer =>
    {
        writer.WriteBoolean("ok", true);
        writer.WriteString("state", "standby");
        writer.WriteString("phase", status.Phase);
        if (status.Primary is { } primary) writer.WriteString("primary", primary);
        if (status.BoundTo is { } bound) writer.WriteString("boundTo", bound);
        if (status.Name is { } name)
        {
            writer.WriteString("name", name);
            writer.WriteNumber("epoch", status.Epoch ?? 0);
            writer.WriteNumber("epochAgeMs", status.EpochAgeMs ?? 0);
        }
        if (status.SinceHeardMs is { } sinceHeard) writer.WriteNumber("sinceHeardMs", sinceHeard);
    });
}
