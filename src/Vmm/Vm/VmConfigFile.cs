using System.Buffers;
using System.Text;
using System.Text.Json;
using Vmm.Arch;
using Vmm.Devices.Virtio;
using Vmm.Memory;

namespace Vmm.Vm;

/// <summary><c>vmm run --config FILE</c>: a VM described in a JSON file with the settings of <c>vmm run</c>'s
/// options (README's "Config file" section and docs/vm-config.schema.json describe it). Everything is checked
/// here, before anything is built, and a bad file is a <see cref="ConfigurationException"/> that names the field
/// (<c>disks[1].path</c>) and what is wrong with it. Relative paths are taken from the file's directory, so a
/// file works from wherever vmm is started (a cluster agent does not run in the VM's directory).</summary>
public static class VmConfigFile
{
    private static readonly string[] Fields =
    [
        "name", "kernel", "initrd", "cmdline", "memory", "cpus", "disks", "nets", "apiSocket", "serialLog",
        "dirtyRing", "dirtyRingEntries", "hugepages", "nestedWorkarounds",
    ];
    private static readonly string[] DiskFields = ["path", "readOnly", "id"];
    private static readonly string[] NetFields = ["tap", "mac"];

    // The file is three levels deep (the VM, its disks, a disk); a deeper one is wrong anyway.
    private static readonly JsonDocumentOptions Depth = new() { MaxDepth = 8 };

    public static VmDefinition Read(string path)
    {
        byte[] json;
        try
        {
            json = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ConfigurationException($"--config {path} does not exist");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigurationException($"--config {path} cannot be read: {e.Message}");
        }
        try
        {
            return Parse(json, Path.GetDirectoryName(Path.GetFullPath(path))!);
        }
        catch (ConfigurationException e)
        {
            throw new ConfigurationException($"--config {path}: {e.Message}");
        }
    }

    /// <param name="directory">Where relative paths in the file start from: the file's own directory.</param>
    public static VmDefinition Parse(ReadOnlyMemory<byte> json, string directory)
    {
        using var document = ParseJson(json);
        var root = new ConfigJsonObject(document.RootElement, "", Fields);

        string kernel = RequiredFile(root, "kernel", "the kernel to boot (a bzImage or an ELF vmlinux)", directory);
        string? initrd = OptionalFile(root, "initrd", directory);
        var disks = ReadDisks(root, directory);
        var networks = ReadNetworks(root);
        bool dirtyRing = root.Bool("dirtyRing", false);
        return new VmDefinition
        {
            Name = root.OptionalString("name") is { } name ? VmName.Check(name, "name:") : VmName.Derive(kernel),
            KernelPath = kernel,
            InitrdPath = initrd,
            CommandLine = root.OptionalString("cmdline") ?? MachineConfig.DefaultCommandLine,
            MemoryBytes = ReadMemory(root),
            VcpuCount = ReadCpus(root),
            Disks = disks,
            Networks = networks,
            ApiSocketPath = FileToCreate(root, "apiSocket", directory),
            SerialLogPath = FileToCreate(root, "serialLog", directory),
            DirtyRing = dirtyRing,
            DirtyRingEntries = ReadDirtyRingEntries(root, dirtyRing),
            HugePages = root.Bool("hugepages", false),
            NestedKvmWorkarounds = root.Bool("nestedWorkarounds", true),
        };
    }

    private static JsonDocument ParseJson(ReadOnlyMemory<byte> json)
    {
        // JsonDocument checks a string's UTF-8 only when the string is read, and then throws an
        // InvalidOperationException; a file that is not text is refused here, where it is clear what is wrong.
        if (FirstInvalidUtf8Byte(json.Span) is { } invalid)
            throw new ConfigurationException($"not UTF-8 text: byte {invalid + 1} is not part of a UTF-8 character");
        try
        {
            return JsonDocument.Parse(json, Depth);
        }
        catch (JsonException e)
        {
            // The reader's message ends with its own 0-based "LineNumber: | BytePositionInLine:"; say it the way
            // an editor counts instead.
            string reason = e.Message;
            int suffix = reason.IndexOf(" LineNumber:", StringComparison.Ordinal);
            if (suffix > 0) reason = reason[..suffix];
            throw new ConfigurationException(e.LineNumber is { } line
                ? $"not valid JSON at line {line + 1}, byte {e.BytePositionInLine + 1}: {reason}"
                : $"not valid JSON: {reason}");
        }
    }

    private static int? FirstInvalidUtf8Byte(ReadOnlySpan<byte> text)
    {
        for (int offset = 0; offset < text.Length;)
        {
            if (Rune.DecodeFromUtf8(text[offset..], out _, out int length) != OperationStatus.Done) return offset;
            offset += length;
        }
        return null;
    }

    private static ulong ReadMemory(ConfigJsonObject root)
    {
        ulong bytes;
        switch (root.Value("memory"))
        {
            case null:
                return MachineConfig.DefaultMemoryBytes;
            case { ValueKind: JsonValueKind.String } text:
                if (!MemorySize.TryParse(text.GetString(), out bytes, out string error)) throw root.Error("memory", error);
                break;
            case { ValueKind: JsonValueKind.Number } number when number.TryGetUInt64(out bytes):
                break;
            case { } other:
                throw root.Error("memory", $"expected a size like \"512M\" or a number of bytes, got {ConfigJsonObject.Describe(other)}");
        }
        if (bytes < X86Layout.MinimumMemoryBytes)
            throw root.Error("memory", $"{bytes >> 20} MiB is too little: vmm needs at least {X86Layout.MinimumMemoryBytes >> 20} MiB");
        if (bytes % GuestMemoryRegion.PageSize != 0)
            throw root.Error("memory", "must be a multiple of 4 KiB");
        return bytes;
    }

    private static int ReadCpus(ConfigJsonObject root) => root.OptionalInt("cpus") switch
    {
        null => 1,
        >= 1 and <= X86Layout.MaxVcpus and int cpus => cpus,
        int cpus => throw root.Error("cpus", $"{cpus} is not a number of vCPUs vmm runs: 1 to {X86Layout.MaxVcpus}"),
    };

    private static int? ReadDirtyRingEntries(ConfigJsonObject root, bool dirtyRing)
    {
        int? entries = root.OptionalInt("dirtyRingEntries");
        if (entries is null) return null;
        if (!dirtyRing) throw root.Error("dirtyRingEntries", "sizes the rings of dirtyRing, which is not true");
        if (entries <= 0 || (entries & (entries - 1)) != 0) throw root.Error("dirtyRingEntries", $"{entries} is not a power of two");
        return entries;
    }

    private static List<BlockDiskConfig> ReadDisks(ConfigJsonObject root, string directory)
    {
        var disks = new List<BlockDiskConfig>();
        foreach (var (disk, index) in root.Objects("disks", DiskFields).Select((d, i) => (d, i)))
        {
            string path = RequiredFile(disk, "path", "the disk's raw image", directory);
            int same = disks.FindIndex(d => d.Path == path);
            // One image under two disks: each would cache and write it as if it were alone.
            if (same >= 0) throw disk.Error("path", $"{path} is already disks[{same}]");
            string? id = disk.OptionalString("id");
            if (id is not null && (id.Length == 0 || Encoding.UTF8.GetByteCount(id) > BlockDiskConfig.MaxIdBytes))
                throw disk.Error("id", $"{ConfigJsonObject.Quote(id)} is not a disk ID: 1 to {BlockDiskConfig.MaxIdBytes} bytes");
            disks.Add(new BlockDiskConfig(path, disk.Bool("readOnly", false), id));
        }
        return disks;
    }

    private static List<NetworkConfig> ReadNetworks(ConfigJsonObject root)
    {
        var networks = new List<NetworkConfig>();
        foreach (var net in root.Objects("nets", NetFields))
        {
            string tap = net.RequiredString("tap", "the name of the TAP device");
            if (!IsInterfaceName(tap))
                throw net.Error("tap", $"{ConfigJsonObject.Quote(tap)} is not an interface name: 1 to {NetworkConfig.MaxTapNameBytes} bytes, without '/', ':' or spaces");
            int same = networks.FindIndex(n => n.TapName == tap);
            if (same >= 0) throw net.Error("tap", $"{tap} is already the TAP of nets[{same}]");
            byte[] mac = NetworkConfig.GenerateMac();
            if (net.OptionalString("mac") is { } text)
                mac = NetworkConfig.TryParseMac(text) ?? throw net.Error("mac", $"{ConfigJsonObject.Quote(text)} is not a unicast MAC address like 02:00:00:00:00:01");
            networks.Add(new NetworkConfig(tap, mac));
        }
        return networks;
    }

    /// <summary>What the kernel's dev_valid_name accepts, so a bad name is refused here and not when the TAP is opened.</summary>
    private static bool IsInterfaceName(string name) =>
        name is not ("" or "." or "..") && Encoding.UTF8.GetByteCount(name) <= NetworkConfig.MaxTapNameBytes
        && !name.Any(c => c is '/' or ':' || char.IsWhiteSpace(c));

    private static string RequiredFile(ConfigJsonObject owner, string name, string whatItIs, string directory) =>
        ExistingFile(owner, name, owner.RequiredString(name, whatItIs), directory);

    private static string? OptionalFile(ConfigJsonObject owner, string name, string directory) =>
        owner.OptionalString(name) is { } text ? ExistingFile(owner, name, text, directory) : null;

    private static string ExistingFile(ConfigJsonObject owner, string name, string text, string directory)
    {
        string path = Resolve(owner, name, text, directory);
        if (Directory.Exists(path)) throw owner.Error(name, $"{path} is a directory, not a file");
        if (!File.Exists(path)) throw owner.Error(name, $"{path} does not exist");
        return path;
    }

    /// <summary>A file vmm creates (the control socket, the console log): its directory must exist.</summary>
    private static string? FileToCreate(ConfigJsonObject owner, string name, string directory)
    {
        if (owner.OptionalString(name) is not { } text) return null;
        string path = Resolve(owner, name, text, directory);
        string parent = Path.GetDirectoryName(path)!;
        if (!Directory.Exists(parent)) throw owner.Error(name, $"the directory {parent} does not exist");
        return path;
    }

    private static string Resolve(ConfigJsonObject owner, string name, string text, string directory)
    {
        if (text.Length == 0) throw owner.Error(name, "empty path");
        if (text.Contains('\0')) throw owner.Error(name, "the path contains a NUL character");
        return Path.GetFullPath(text, directory);
    }
}
