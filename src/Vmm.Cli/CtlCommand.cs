using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Vmm.Cli;

/// <summary><c>vmm ctl</c>: one request to a VM's control socket. Exit code 0 when the VM did it, 1 when
/// it answered with an error, 2 when there was no VM to ask. A migration's progress lines are printed as
/// they come, then its final answer.</summary>
public static class CtlCommand
{
    public static int Execute(CtlOptions options)
    {
        if (BuildRequest(options, out string error) is not { } request)
        {
            Console.Error.WriteLine($"vmm: error: {error}");
            return 2;
        }
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(options.Socket));
        }
        catch (SocketException e)
        {
            Console.Error.WriteLine($"vmm: error: cannot reach the control socket {options.Socket}: {e.Message} (is the VM running with --api-socket?)");
            return 2;
        }
        using var stream = new NetworkStream(socket);
        stream.Write(request);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        while (reader.ReadLine() is { } answer)
        {
            Console.Out.WriteLine(answer);
            JsonElement ok;
            try
            {
                using var document = JsonDocument.Parse(answer);
                if (document.RootElement.ValueKind != JsonValueKind.Object || !document.RootElement.TryGetProperty("ok", out ok)) continue; // a progress line
                ok = ok.Clone();
            }
            catch (JsonException)
            {
                Console.Error.WriteLine($"vmm: error: {options.Socket} answered with something that is not JSON: is it a vmm control socket?");
                return 2;
            }
            return ok.ValueKind == JsonValueKind.True ? 0 : 1;
        }
        Console.Error.WriteLine("vmm: error: the VM closed the control socket without answering");
        return 2;
    }

    /// <summary>The JSON request line, or null with <paramref name="error"/> when the arguments do not make one.</summary>
    private static byte[]? BuildRequest(CtlOptions options, out string error)
    {
        error = "";
        var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("command", options.Command);
            switch (options.Command)
            {
                case "snapshot":
                    if (options.Path is null)
                    {
                        error = "snapshot needs a directory: vmm ctl --socket PATH snapshot DIR";
                        return null;
                    }
                    // The VM resolves paths against its own working directory, not ours.
                    writer.WriteString("path", Path.GetFullPath(options.Path));
                    break;
                case "migrate":
                    if (options.To is null)
                    {
                        error = "migrate needs --to HOST:PORT (where 'vmm migrate-receive --listen' runs)";
                        return null;
                    }
                    writer.WriteString("to", options.To);
                    writer.WriteNumber("downtimeMs", options.DowntimeMs);
                    writer.WriteNumber("timeoutS", options.TimeoutS);
                    writer.WriteNumber("maxPasses", options.MaxPasses);
                    writer.WriteBoolean("force", options.Force);
                    writer.WriteBoolean("autoConverge", options.AutoConverge);
                    writer.WriteBoolean("copyDisks", options.CopyDisks);
                    writer.WriteNumber("connections", options.Connections);
                    // The VM reads the TLS files, from its own working directory.
                    if (options.TlsDir is not null) writer.WriteString("tlsDir", Path.GetFullPath(options.TlsDir));
                    break;
                case "resume":
                    if (options.TargetNotRunning) writer.WriteBoolean("targetNotRunning", true);
                    break;
                case "replicate":
                    if (options.Stop)
                    {
                        writer.WriteBoolean("stop", true);
                        break;
                    }
                    if (options.Handover)
                    {
                        writer.WriteBoolean("handover", true);
                        break;
                    }
                    if (options.To is null)
                    {
                        error = "replicate needs --to HOST:PORT (where 'vmm standby --listen' runs), --stop or --handover";
                        return null;
                    }
                    writer.WriteString("to", options.To);
                    writer.WriteNumber("intervalMs", options.IntervalMs);
                    if (options.NoWait) writer.WriteBoolean("noWait", true);
                    if (options.TlsDir is not null) writer.WriteString("tlsDir", Path.GetFullPath(options.TlsDir));
                    break;
            }
            writer.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        return buffer.ToArray();
    }
}
