using System.Net.Sockets;
using System.Text.Encodings.Web;
using System.Text.Json;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Vm;

namespace Vmm.Control;

/// <summary>The VM's control socket: a unix socket taking one JSON request per line,
/// <c>{"command":"status"|"pause"|"resume"}</c>, <c>{"command":"snapshot","path":DIR}</c> or
/// <c>{"command":"migrate","to":"HOST:PORT","tlsDir":DIR,...}</c> (which first streams one <c>{"event":"pass",...}</c>
/// line per copy pass), and answering one JSON line,
/// <c>{"ok":true,...}</c> or <c>{"ok":false,"error":"..."}</c>. Requests are hostile input: anything
/// malformed gets an error answer, never an exception in the VMM. Each request is a failure boundary: a
/// failure, a bug included, answers that request with an error and leaves the VM as it was. Pause, resume,
/// snapshot and migrate take turns: while one runs, the others are refused.</summary>
public sealed class ControlServer : IDisposable
{
    private const int MaxRequestBytes = 64 * 1024;

    private readonly Machine _machine;
    private readonly Logger _log;
    private readonly Socket _listener;
    private readonly string _path;
    private readonly List<Socket> _clients = [];
    private readonly CountdownEvent _serving = new(1);
    private volatile bool _closed;
    /// <summary>The pause, resume, snapshot or migration in progress, or null.</summary>
    private string? _operation;

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
            try
            {
                client = _listener.Accept();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                if (_closed) return;
                // Out of file descriptors, a client gone before it was taken: the next one may do.
                _log.Warning($"control socket: accepting a connection failed ({e.Message})");
                Thread.Sleep(100);
                continue;
            }
            lock (_clients)
            {
                if (_closed)
                {
                    client.Dispose();
                    return;
                }
                _clients.Add(client);
                _serving.AddCount();
            }
            new Thread(() => Serve(client)) { Name = "control-client", IsBackground = true }.Start();
        }
    }

    /// <summary>One client connection: requests in turn until it closes. Whatever ends the connection (the
    /// client going away, a request too long) ends only it.</summary>
    private void Serve(Socket client)
    {
        try
        {
            using var stream = new NetworkStream(client, ownsSocket: false);
            while (ReadLine(stream) is { } request)
            {
                VmStop? stopAfterAnswer = null;
                byte[] answer;
                try
                {
                    answer = Handle(request, line => stream.Write(line), stop => stopAfterAnswer = stop);
                }
                catch (Exception e)
                {
                    // A bug behind one request must not take the running VM down with this thread.
                    _log.Error($"control request failed: internal error in vmm: {e}");
                    answer = Error($"internal error in vmm: {e.Message}");
                }
                stream.Write(answer);
                // A migrated VM stops here only once the client has the answer.
                if (stopAfterAnswer is not null) _machine.RequestStop(stopAfterAnswer);
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException)
        {
            // The client went away (or the server is closing); nothing to answer.
        }
        finally
        {
            lock (_clients) _clients.Remove(client);
            client.Dispose();
            _serving.Signal();
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
    public byte[] Handle(ReadOnlySpan<byte> request) => Handle(request, _ => { }, _ => { });

    /// <param name="progress">Writes an intermediate JSON line (a migration's passes) to the client.</param>
    /// <param name="stopAfterAnswer">Asks for the VM to stop once the answer is written (a finished migration).</param>
    private byte[] Handle(ReadOnlySpan<byte> request, Action<byte[]> progress, Action<VmStop> stopAfterAnswer)
    {
        JsonElement root;
        try
        {
            using var document = JsonDocument.Parse(request.ToArray());
            root = document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            return Error($"the request is not JSON: {e.Message}");
        }
        string? command = root.ValueKind == JsonValueKind.Object
            && root.TryGetProperty("command", out var value) && value.ValueKind == JsonValueKind.String
            ? value.GetString() : null;
        if (command is null) return Error("the request must be a JSON object with a string \"command\"");
        if (command == "status") return Status();
        if (command is not ("pause" or "resume" or "snapshot" or "migrate"))
            return Error($"unknown command '{command}' (expected status, pause, resume, snapshot or migrate)");
        // One at a time: a resume in the middle of a snapshot or a stop-and-copy would let the VM run here
        // while its memory is written out or its state goes to the target.
        string operation = command == "migrate" ? "migration" : command;
        if (Interlocked.CompareExchange(ref _operation, operation, null) is { } running)
            return Error(running == "migration" && command == "migrate" ? "a migration is already running" : $"a {running} is running; {command} waits until it has ended");
        try
        {
            switch (command)
            {
                case "snapshot":
                    if (StringArgument(root, "path") is not { Length: > 0 } path) return Error("snapshot needs a \"path\": the directory to write");
                    Snapshot(path);
                    break;
                case "migrate":
                    return Migrate(root, progress, stopAfterAnswer);
                case "pause":
                    _machine.Pause();
                    _log.Info("paused by the control socket");
                    break;
                case "resume":
                    _machine.Resume();
                    _log.Info("resumed by the control socket");
                    break;
            }
        }
        catch (VmmException e)
        {
            return Error(e.Message);
        }
        finally
        {
            Volatile.Write(ref _operation, null);
        }
        return Status();
    }

    private byte[] Migrate(JsonElement root, Action<byte[]> progress, Action<VmStop> stopAfterAnswer)
    {
        if (StringArgument(root, "to") is not { Length: > 0 } target) return Error("migrate needs \"to\": the target's HOST:PORT");
        var options = new MigrationOptions
        {
            Target = target,
            DowntimeMs = IntArgument(root, "downtimeMs") ?? 300,
            TimeoutS = IntArgument(root, "timeoutS") ?? 0,
            MaxPasses = IntArgument(root, "maxPasses") ?? 30,
            Force = BoolArgument(root, "force"),
            AutoConverge = BoolArgument(root, "autoConverge"),
            TlsDirectory = StringArgument(root, "tlsDir"),
        };
        if (options.DowntimeMs < 0 || options.TimeoutS < 0 || options.MaxPasses < 1)
            return Error("downtimeMs and timeoutS must not be negative, maxPasses at least 1");
        try
        {
            _log.Info($"migrating to {target} (downtime limit {options.DowntimeMs} ms{(options.TimeoutS > 0 ? $", timeout {options.TimeoutS} s" : "")}{(options.AutoConverge ? ", auto-converge" : "")}{(options.TlsDirectory is { } tls ? $", mutual TLS with {tls}" : "")})");
            var report = MigrationSource.Migrate(_machine, options, pass =>
            {
                _log.Info($"migration {pass}");
                TryWrite(progress, Json(writer =>
                {
                    writer.WriteString("event", "pass");
                    writer.WriteNumber("pass", pass.Number);
                    writer.WriteNumber("pagesSent", pass.PagesSent);
                    writer.WriteNumber("zeroPages", pass.ZeroPages);
                    writer.WriteNumber("mibSent", Math.Round(pass.BytesSent / 1048576.0, 2));
                    writer.WriteNumber("ms", Math.Round(pass.Seconds * 1000, 1));
                    writer.WriteNumber("bandwidthMiBps", Math.Round(pass.BandwidthMiBps, 1));
                    writer.WriteNumber("dirtyPages", pass.DirtyPagesAfter);
                    writer.WriteNumber("dirtyRateMiBps", Math.Round(pass.DirtyRateMiBps, 1));
                    writer.WriteNumber("estimatedDowntimeMs", Math.Round(pass.EstimatedDowntimeMs, 1));
                    writer.WriteNumber("throttlePercent", pass.ThrottlePercent);
                }));
            }, _log);
            _log.Info(report.ToString());
            stopAfterAnswer(VmStop.Migrated(target));
            return Json(writer =>
            {
                writer.WriteBoolean("ok", true);
                writer.WriteString("state", "migrated");
                writer.WriteString("target", target);
                writer.WriteNumber("passes", report.Passes);
                writer.WriteNumber("totalMs", Math.Round(report.TotalMs, 1));
                writer.WriteNumber("downtimeMs", Math.Round(report.DowntimeMs, 1));
                writer.WriteNumber("mibSent", Math.Round(report.TotalBytes / 1048576.0, 2));
                writer.WriteNumber("pagesSent", report.PagesSent);
                writer.WriteBoolean("forced", report.Forced);
            });
        }
        catch (MigrationException e)
        {
            _log.Error(e.Message);
            return Error(e.Message);
        }
    }

    /// <summary>A client that stopped reading progress must not fail the migration itself.</summary>
    private static void TryWrite(Action<byte[]> write, byte[] line)
    {
        try { write(line); }
        catch (Exception e) when (e is IOException or ObjectDisposedException) { }
    }

    private static int? IntArgument(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int n) ? n : null;

    private static bool BoolArgument(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.True;

    private static string? StringArgument(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    /// <summary>Pauses a running VM for as long as the snapshot takes (a paused one stays paused).</summary>
    private void Snapshot(string path)
    {
        bool wasPaused = _machine.IsPaused;
        _machine.Pause();
        var started = DateTime.UtcNow;
        try
        {
            Vmm.Snapshot.SnapshotDirectory.Write(_machine, path);
        }
        finally
        {
            if (!wasPaused) _machine.Resume();
        }
        _log.Info($"snapshot written to {path} in {(DateTime.UtcNow - started).TotalMilliseconds:F0} ms");
    }

    private byte[] Status() => Json(writer =>
    {
        writer.WriteBoolean("ok", true);
        writer.WriteString("state", Volatile.Read(ref _operation) == "migration" ? "migrating" : _machine.IsPaused ? "paused" : "running");
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

    /// <summary>Stops taking requests, ends every connection, and returns once no request is being served any
    /// more: a snapshot or migration in progress (which ends promptly when the VM has stopped) finishes before
    /// the caller releases the machine.</summary>
    public void Dispose()
    {
        lock (_clients)
        {
            if (_closed) return;
            _closed = true;
            // Shutdown wakes a thread blocked reading a request; a request being served finishes first.
            foreach (var client in _clients)
            {
                try { client.Shutdown(SocketShutdown.Receive); }
                catch (SocketException) { }
            }
        }
        _listener.Dispose();
        _serving.Signal();
        _serving.Wait();
        _serving.Dispose();
        try { File.Delete(_path); }
        catch (IOException) { }
    }
}
