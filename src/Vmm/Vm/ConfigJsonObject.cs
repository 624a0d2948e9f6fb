using System.Text.Json;

namespace Vmm.Vm;

/// <summary>One JSON object of a config file, read field by field. Every error names the field by its path
/// (<c>disks[1].path</c>) and says what is wrong with it, and a field the reader does not know is refused: a
/// misspelt one must not be silently ignored and leave its setting at the default.</summary>
internal sealed class ConfigJsonObject
{
    private readonly Dictionary<string, JsonElement> _fields = new(StringComparer.Ordinal);
    private readonly string _path;

    public ConfigJsonObject(JsonElement element, string path, IReadOnlyList<string> known)
    {
        _path = path;
        if (element.ValueKind != JsonValueKind.Object)
            throw new ConfigurationException($"{(path.Length == 0 ? "the file" : path)}: expected an object, got {Describe(element)}");
        foreach (var property in element.EnumerateObject())
        {
            if (!known.Contains(property.Name))
            {
                string? meant = known.FirstOrDefault(k => k.Equals(property.Name, StringComparison.OrdinalIgnoreCase));
                throw Error(property.Name, meant is null
                    ? $"unknown field (known here: {string.Join(", ", known)})"
                    : $"unknown field; field names are case-sensitive: did you mean '{meant}'?");
            }
            // Two of one field would otherwise mean whichever came last, as silently as a misspelt one.
            if (!_fields.TryAdd(property.Name, property.Value)) throw Error(property.Name, "given twice");
        }
    }

    public string FieldPath(string name) => _path.Length == 0 ? name : $"{_path}.{name}";

    public ConfigurationException Error(string name, string message) => new($"{FieldPath(name)}: {message}");

    /// <summary>The field's value; null when it is absent or JSON null, both of which mean "the default".</summary>
    public JsonElement? Value(string name) =>
        _fields.TryGetValue(name, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;

    public string? OptionalString(string name) => Value(name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.String } value => value.GetString(),
        { } value => throw Error(name, $"expected a string, got {Describe(value)}"),
    };

    public string RequiredString(string name, string whatItIs) =>
        OptionalString(name) ?? throw Error(name, $"missing: {whatItIs}");

    public bool Bool(string name, bool defaultValue) => Value(name) switch
    {
        null => defaultValue,
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        { } value => throw Error(name, $"expected true or false, got {Describe(value)}"),
    };

    public int? OptionalInt(string name) => Value(name) switch
    {
        null => null,
        { ValueKind: JsonValueKind.Number } value when value.TryGetInt32(out int number) => number,
        { } value => throw Error(name, $"expected a whole number, got {Describe(value)}"),
    };

    /// <summary>An array of objects, each read with <paramref name="known"/> fields; absent or null: none.</summary>
    public IReadOnlyList<ConfigJsonObject> Objects(string name, IReadOnlyList<string> known) => Value(name) switch
    {
        null => [],
        { ValueKind: JsonValueKind.Array } array => [.. array.EnumerateArray().Select((item, i) => new ConfigJsonObject(item, $"{FieldPath(name)}[{i}]", known))],
        { } value => throw Error(name, $"expected an array, got {Describe(value)}"),
    };

    public static string Describe(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => $"the string {Quote(value.GetString()!)}",
        JsonValueKind.Number => $"the number {value.GetRawText()}",
        JsonValueKind.True or JsonValueKind.False => $"{value.GetRawText()}",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => "null",
    };

    /// <summary>A value as the user wrote it, cut short: messages must stay readable whatever the file holds.</summary>
    public static string Quote(string text) => text.Length <= 80 ? $"\"{text}\"" : $"\"{text[..80]}...\"";
}
