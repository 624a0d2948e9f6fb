using System.Net.Sockets;
using System.Text.Encodings.Web;
using System.Text.Json;
using Vmm.Diagnostics;
using Vmm.Vm;

namespace Vmm.Control;

/// <summary>The VM's control socket: a unix socket taking one JSON request per line,
/// <c>{"command":"status"|"pause"|"resume"}</c>, and answering one JSON line,
/// <c>{"ok":true,...}</c> or <c>{"ok":false,"error":"..."}</c>. Requests are hostile input: anything
/// malformed gets an error answer, never an exception in the VMM.</summary>
public sealed class ControlServer : IDisposable
{
    private const int MaxRequestBytes = 64 * 1024;

    private readonly Machine _machine;
    private readonly Logger _log;
    private readonly Socket _listener;
    private readonly string _path;
    private volatile bool _closed;

    private ControlServer(Machine machine, Logger log, Socket listener, string path)
    {
        _machine = machine;
        _log = log;
        _listener = listener;
        _path = path;
        new Thread(AcceptLoop) { Name = "control", IsBackground = true }.Start();
    }

    /// <summary>Listens at <paramref name="path"/>. A stale socket file (no one answering) is replaced; a
    /// live one is an error, so two VMs never share a control socket.</summary>
    public static ControlServer Start(Machine machine, string path, Logger log)
    {
        if (File.Exists(path) || Directory.Exists(path))
        {
            if (IsAnswering(path)) throw new IOException($"{path} is the control socket of a running vmm");
            File.Delete(path);
        }
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(8);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        return new ControlServer(machine, log, listener, path);
    }

    private static bool IsAnswering(string path)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private void AcceptLoop()
    {
        while (!_closed)
        {
            Socket client;
            try { client = _listener.Accept(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { return; }
            new Thread(() => Serve(client)) { Name = "control-client", IsBackground = true }.Start();
        }
    }

    private void Serve(Socket client)
    {
        using (client)
        using (var stream = new NetworkStream(client, ownsSocket: false))
        {
            try
            {
                while (ReadLine(stream) is { } request)
                {
                    byte[] answer = Handle(request);
                    stream.Write(answer);
                }
            }
            catch (IOException)
            {
                // The client went away; nothing to answer.
            }
        }
    }

    /// <summary>One request line (without its newline), or null at the end of the stream.</summary>
    private static byte[]? ReadLine(Stream stream)
    {
        var line = new MemoryStream();
        int b;
        while ((b = stream.ReadByte()) >= 0)
        {
            if (b == '\n') return line.ToArray();
            if (line.Length == MaxRequestBytes) throw new IOException("control request longer than 64 KiB");
            line.WriteByte((byte)b);
        }
        return line.Length > 0 ? line.ToArray() : null;
    }

    /// <summary>Answers one request; public so tests can drive the protocol without a socket.</summary>
    public byte[] Handle(ReadOnlySpan<byte> request)
    {
        string? command;
        try
        {
            using var document = JsonDocument.Parse(request.ToArray());
            command = document.RootElement.ValueKind == JsonValueKind.Object
                && document.RootElement.TryGetProperty("command", out var value) && value.ValueKind == JsonValueKind.String
                ? value.GetString() : null;
        }
        catch (JsonException e)
        {
            return Error($"the request is not JSON: {e.Message}");
        }
        if (command is null) return Error("the request must be a JSON object with a string \"command\"");
        try
        {
            switch (command)
            {
                case "status":
                    break;
                case "pause":
                    _machine.Pause();
                    _log.Info("paused by the control socket");
                    break;
                case "resume":
                    _machine.Resume();
                    _log.Info("resumed by the control socket");
                    break;
                default:
                    return Error($"unknown command '{command}' (expected status, pause or resume)");
            }
        }
        catch (InvalidOperationException e)
        {
            return Error(e.Message);
        }
        return Status();
    }

    private byte[] Status() => Json(writer =>
    {
        writer.WriteBoolean("ok", true);
        writer.WriteString("state", _machine.IsPaused ? "paused" : "running");
        writer.WriteNumber("vcpus", _machine.VcpuCount);
        writer.WriteNumber("memoryBytes", _machine.Memory.TotalBytes);
        writer.WriteNumber("uptimeMs", (long)_machine.Uptime.TotalMilliseconds);
    });

    private static byte[] Error(string message) => Json(writer =>
    {
        writer.WriteBoolean("ok", false);
        writer.WriteString("error", message);
    });

    private static byte[] Json(Action<Utf8JsonWriter> body)
    {
        var buffer = new MemoryStream();
        // Relaxed escaping keeps messages readable ('x', not \u0027x\u0027); the output is never embedded in HTML.
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            body(writer);
            writer.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        return buffer.ToArray();
    }

    public void Dispose()
    {
        _closed = true;
        _listener.Dispose();
        try { File.Delete(_path); }
        catch (IOException) { }
    }
}
