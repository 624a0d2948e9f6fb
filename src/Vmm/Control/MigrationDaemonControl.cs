using Vmm.Diagnostics;
using Vmm.Migration;

namespace Vmm.Control;

/// <summary>A migration daemon's own control socket: <c>list</c> (the VMs it runs) and <c>status</c>.</summary>
public static class MigrationDaemonControl
{
    public static JsonLineServer Start(MigrationDaemon daemon, string path, Logger log) =>
        JsonLineServer.Start(path, (request, _) => Handle(daemon, request), log, "daemon-control");

    private static byte[] Handle(MigrationDaemon daemon, ReadOnlySpan<byte> request)
    {
        if (JsonAnswers.Parse(request, out byte[] malformed) is not var (_, command)) return malformed;
        var vms = daemon.Vms;
        return command switch
        {
            "list" => JsonAnswers.Json(writer =>
            {
                writer.WriteBoolean("ok", true);
                writer.WriteStartArray("vms");
                foreach (var vm in vms)
                {
                    writer.WriteStartObject();
                    writer.WriteString("name", vm.Name);
                    writer.WriteNumber("migration", vm.Migration);
                    writer.WriteString("state", vm.Machine.StopReason is not null ? "stopping" : vm.Machine.IsPaused ? "paused" : "running");
                    if (vm.ApiSocket is not null) writer.WriteString("apiSocket", Path.GetFullPath(vm.ApiSocket));
                    writer.WriteNumber("uptimeMs", (long)vm.Machine.Uptime.TotalMilliseconds);
                    writer.WriteEndObject();
                }
                writer.WriteEndArray();
            }),
            "status" => JsonAnswers.Json(writer =>
            {
                writer.WriteBoolean("ok", true);
                writer.WriteString("state", "receiving");
                writer.WriteString("listen", daemon.LocalEndpoint?.ToString());
                writer.WriteNumber("vms", vms.Count);
                writer.WriteNumber("incoming", daemon.Incoming);
            }),
            _ => JsonAnswers.Error($"unknown command '{command}' for a migration daemon (expected list or status; a VM's own socket is its --api-socket)"),
        };
    }
}
