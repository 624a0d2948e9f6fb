using System.Text.Json.Serialization;

namespace Vmm.Cli;

/// <summary>Source-generated JSON for the one value ctl serializes (a string), so NativeAOT needs no reflection.</summary>
[JsonSerializable(typeof(string))]
internal sealed partial class CtlJsonContext : JsonSerializerContext;
