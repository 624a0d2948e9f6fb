using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Vmm.Tests.EndToEnd;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Cli;

/// <summary>The config file's documentation says what vmm reads: docs/config.md's example parses with vmm's own
/// parser, and it, the JSON Schema in docs/ and docs/config.md's table of fields name the same fields.</summary>
public sealed class VmConfigDocumentationTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-config-doc-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static string Readme => File.ReadAllText(Path.Combine(RepositoryPaths.Root, "docs", "config.md"));

    private static string ReadmeExample =>
        Regex.Match(Readme, @"## Config file.*?```json\n(.*?)```", RegexOptions.Singleline).Groups[1].Value;

    private static JsonElement Schema =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(RepositoryPaths.Root, "docs", "vm-config.schema.json"))).RootElement;

    [Fact]
    public void ReadmeExample_ParsesWithVmmsParser()
    {
        foreach (string file in new[] { "bzImage", "root.img", "tools.img" })
            File.WriteAllBytes(Path.Combine(_directory, file), new byte[512]);

        var vm = VmConfigFile.Parse(Encoding.UTF8.GetBytes(ReadmeExample), _directory);

        Assert.Equal("web1", vm.Name);
        Assert.Equal(Path.Combine(_directory, "bzImage"), vm.KernelPath);
        Assert.Equal(512UL << 20, vm.MemoryBytes);
        Assert.Equal(2, vm.VcpuCount);
        Assert.Equal([("root", false), (null, true)], vm.Disks.Select(d => (d.Id, d.ReadOnly)));
        Assert.Equal("tap0", Assert.Single(vm.Networks).TapName);
        Assert.Equal(Path.Combine(_directory, "web1.sock"), vm.ApiSocketPath);
    }

    [Fact]
    public void ReadmeExampleSchemaAndTable_NameTheSameFields()
    {
        var example = JsonDocument.Parse(ReadmeExample).RootElement;
        string[] inExample = [.. FieldPaths(example)];
        string[] inSchema = [.. SchemaFieldPaths(Schema)];

        Assert.Equal(inSchema.Order(), inExample.Distinct().Order());
        var inTable = Regex.Matches(Readme, @"^\| `([A-Za-z\[\].]+)` \| (?:string|integer|boolean|array|\w+ or)", RegexOptions.Multiline).Select(m => m.Groups[1].Value);
        Assert.Equal(inSchema.Order(), inTable.Order());
    }

    /// <summary><c>name</c>, <c>disks</c>, <c>disks[].path</c>, ... of a config file.</summary>
    private static IEnumerable<string> FieldPaths(JsonElement file)
    {
        foreach (var field in file.EnumerateObject())
        {
            yield return field.Name;
            if (field.Value.ValueKind == JsonValueKind.Array)
                foreach (var item in field.Value.EnumerateArray())
                    foreach (var inner in item.EnumerateObject())
                        yield return $"{field.Name}[].{inner.Name}";
        }
    }

    private static IEnumerable<string> SchemaFieldPaths(JsonElement schema)
    {
        foreach (var field in schema.GetProperty("properties").EnumerateObject())
        {
            yield return field.Name;
            if (field.Value.TryGetProperty("items", out var items))
                foreach (var inner in items.GetProperty("properties").EnumerateObject())
                    yield return $"{field.Name}[].{inner.Name}";
        }
    }
}
