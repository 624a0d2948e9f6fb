using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Vmm.Tests.EndToEnd;

/// <summary>Asks a running vmm's --api-socket directly, in milliseconds, where starting a `vmm ctl` process would
/// take a second: for tests that must act on the VM at a precise moment.</summary>
internal static class ControlSocketClient
{
    /// <summary>Sends one command and returns the final answer (the line with "ok"), failing on an error answer.</summary>
    public static JsonElement Ask(string socketPath, string command) => Ask(socketPath, (object)new { command });

    /// <summary>Sends one request (serialized as JSON, e.g. an anonymous object) and returns the final answer.</summary>
    public static JsonElement Ask(string socketPath, object request)
    {
        string requestJson = JsonSerializer.Serialize(request);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(socketPath));
        using var stream = new NetworkStream(socket);
        stream.Write(Encoding.UTF8.GetBytes(requestJson + "\n"));
        using var reader = new StreamReader(stream, Encoding.UTF8);
        while (reader.ReadLine() is { } line)
        {
            using var answer = JsonDocument.Parse(line);
            if (!answer.RootElement.TryGetProperty("ok", out var ok)) continue;
            if (!ok.GetBoolean()) throw new InvalidOperationException($"vmm refused {requestJson}: {line}");
            return answer.RootElement.Clone();
        }
        throw new InvalidOperationException($"vmm closed its control socket without answering {requestJson}");
    }
}
