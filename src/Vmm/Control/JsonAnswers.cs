using System.Text.Encodings.Web;
using System.Text.Json;

namespace Vmm.Control;

/// <summary>How control sockets read requests and write answers: one JSON object per line.</summary>
public static class JsonAnswers
{
    /// <summary>The request's object and its "command", or an error answer to send instead.</summary>
    public static (JsonElement Root, string Command)? Parse(ReadOnlySpan<byte> request, out byte[] error)
    {
        error = [];
        JsonElement root;
        try
        {
            using var document = JsonDocument.Parse(request.ToArray());
            root = document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            error = Error($"the request is not JSON: {e.Message}");
            return null;
        }
        string? command = root.ValueKind == JsonValueKind.Object
            && root.TryGetProperty("command", out var value) && value.ValueKind == JsonValueKind.String
            ? value.GetString() : null;
        if (command is null)
        {
            error = Error("the request must be a JSON object with a string \"command\"");
            return null;
        }
        return (root, command);
    }

    public static int? Int(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int n) ? n : null;

    public static bool Bool(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.True;

    public static string? String(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    public static byte[] Error(string message) => Json(writer =>
    {
        writer.WriteBoolean("ok", false);
        writer.WriteString("error", message);
    });

    public static byte[] Json(Action<Utf8JsonWriter> body)
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
}
