using System.Text;
using System.Text.Json;
using CsCheck;
using Vmm.Cli;
using Vmm.Devices.Virtio;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Cli;

/// <summary><c>vmm run --config FILE</c>'s parser: a file gives the VM the equivalent options give, and a bad
/// one is refused with a message that names the field and what is wrong with it.</summary>
public sealed class VmConfigFileTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-config-").FullName;

    public VmConfigFileTests()
    {
        foreach (string file in new[] { "bzImage", "initramfs.cpio", "root.img", "data.img" })
            File.WriteAllBytes(Path.Combine(_directory, file), new byte[512]);
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private string InDirectory(string name) => Path.Combine(_directory, name);

    private VmDefinition Parse(string json) => VmConfigFile.Parse(Encoding.UTF8.GetBytes(json), _directory);

    [Fact]
    public void FullFile_GivesTheMachineConfigOfTheEquivalentOptions()
    {
        var fromFile = Parse("""
            {
              "name": "web1", "kernel": "bzImage", "initrd": "initramfs.cpio", "cmdline": "console=ttyS0 root=/dev/vda",
              "memory": "512M", "cpus": 2,
              "disks": [ { "path": "root.img", "readOnly": false, "id": "root" }, { "path": "data.img", "readOnly": true } ],
              "nets": [ { "tap": "tap0", "mac": "52:54:00:12:34:56" }, { "tap": "tap1", "mac": "02:00:00:00:00:01" } ],
              "apiSocket": "web1.sock", "serialLog": "web1.log",
              "dirtyRing": true, "dirtyRingEntries": 4096, "hugepages": true, "nestedWorkarounds": false
            }
            """);
        var fromOptions = new RunOptions
        {
            Name = "web1", Kernel = InDirectory("bzImage"), Initrd = InDirectory("initramfs.cpio"), CommandLine = "console=ttyS0 root=/dev/vda",
            Memory = "512M", Cpus = 2,
            Disks = [$"{InDirectory("root.img")},id=root", $"{InDirectory("data.img")},ro"],
            Networks = ["tap=tap0,mac=52:54:00:12:34:56", "tap=tap1,mac=02:00:00:00:00:01"],
            ApiSocket = InDirectory("web1.sock"), SerialLog = InDirectory("web1.log"),
            DirtyRing = true, DirtyRingEntries = 4096, HugePages = true, NoNestedWorkarounds = true,
        }.ToVmDefinition();

        Assert.Equal(Describe(fromOptions), Describe(fromFile));
    }

    [Fact]
    public void KernelAlone_TakesEveryDefaultOfTheOptions()
    {
        var fromFile = Parse("""{"kernel": "bzImage"}""");
        var fromOptions = new RunOptions { Kernel = InDirectory("bzImage") }.ToVmDefinition();

        Assert.StartsWith("bzImage-", fromFile.Name);
        Assert.Equal(Describe(fromOptions with { Name = "" }), Describe(fromFile with { Name = "" }));
    }

    [Fact]
    public void NullFields_MeanTheirDefaults()
    {
        var vm = Parse("""{"kernel": "bzImage", "initrd": null, "cmdline": null, "memory": null, "cpus": null, "disks": null, "apiSocket": null}""");

        Assert.Null(vm.InitrdPath);
        Assert.Equal(MachineConfig.DefaultCommandLine, vm.CommandLine);
        Assert.Equal(MachineConfig.DefaultMemoryBytes, vm.MemoryBytes);
        Assert.Equal(1, vm.VcpuCount);
        Assert.Empty(vm.Disks);
        Assert.Null(vm.ApiSocketPath);
    }

    [Fact]
    public void MemoryAsANumber_IsBytes() =>
        Assert.Equal(64UL << 20, Parse("""{"kernel": "bzImage", "memory": 67108864}""").MemoryBytes);

    [Fact]
    public void RelativePaths_AreTakenFromTheFilesDirectory()
    {
        string vmDirectory = Directory.CreateDirectory(InDirectory("web1")).FullName;
        File.WriteAllBytes(Path.Combine(vmDirectory, "disk.img"), new byte[512]);
        string file = Path.Combine(vmDirectory, "vm.json");
        File.WriteAllText(file, """{"kernel": "../bzImage", "disks": [{"path": "disk.img"}], "apiSocket": "api.sock", "serialLog": "/tmp/console.log"}""");

        var vm = VmConfigFile.Read(file);

        Assert.Equal(InDirectory("bzImage"), vm.KernelPath);
        Assert.Equal(Path.Combine(vmDirectory, "disk.img"), vm.Disks[0].Path);
        Assert.Equal(Path.Combine(vmDirectory, "api.sock"), vm.ApiSocketPath);
        Assert.Equal("/tmp/console.log", vm.SerialLogPath);
    }

    [Fact]
    public void MissingMac_IsGeneratedLikeTheOptionsDo()
    {
        byte[] mac = Parse("""{"kernel": "bzImage", "nets": [{"tap": "tap0"}]}""").Networks[0].Mac;

        Assert.Equal(0x02, mac[0] & 0x03);
    }

    /// <summary>Any VM written as a file the way a tool would write it (any order of fields, relative or absolute
    /// paths, memory as text or bytes, any command line) reads back as that VM.</summary>
    [Fact]
    public void AnyVm_WrittenAsAFile_ReadsBackTheSame()
    {
        var names = Gen.Select(Gen.Char.AlphaNumeric, Gen.Char["abcXYZ019._-"].Array[0, 63], (first, rest) => first + new string(rest));
        var commandLines = Gen.Char["az09 =,.-\"\\/\n\té€"].Array[0, 60].Select(c => new string(c));
        var disks = Gen.Select(Gen.Int[0, 2], Gen.Bool, Gen.Char.AlphaNumeric.Array[0, 20].Null(), (count, readOnly, id) => (count, readOnly, id))
            .Select(d => (IReadOnlyList<BlockDiskConfig>)[.. new[] { "root.img", "data.img" }.Take(d.count).Select((file, i) => new BlockDiskConfig(InDirectory(file), d.readOnly && i == 0, d.id is { Length: > 0 } ? new string(d.id) : null))]);
        var nets = Gen.Byte.Array[6].Array[0, 3].Select(macs => (IReadOnlyList<NetworkConfig>)[.. macs.Select((mac, i) => new NetworkConfig($"tap{i}", [(byte)(mac[0] & 0xfe), .. mac[1..]]))]);
        var vms = Gen.Select(names, commandLines, Gen.Int[16, 1 << 16], Gen.Int[1, 32], disks, nets, Gen.Int[0, 20].Nullable(), Gen.Bool.Array[4])
            .Select((name, cmdline, memoryMiB, cpus, disks, nets, ringShift, flags) => new VmDefinition
            {
                Name = name, KernelPath = InDirectory("bzImage"), InitrdPath = flags[0] ? InDirectory("initramfs.cpio") : null, CommandLine = cmdline,
                MemoryBytes = (ulong)memoryMiB << 20, VcpuCount = cpus, Disks = disks, Networks = nets,
                ApiSocketPath = flags[1] ? InDirectory("api.sock") : null, SerialLogPath = flags[1] ? null : InDirectory("console.log"),
                DirtyRing = ringShift is not null, DirtyRingEntries = ringShift is { } shift ? 1 << shift : null, HugePages = flags[2], NestedKvmWorkarounds = flags[3],
            });

        Gen.Select(vms, Gen.Bool, Gen.Int).Sample((vm, relative, order) =>
        {
            var read = Parse(AsFile(vm, relative, new Random(order)));
            Assert.Equal(Describe(vm), Describe(read));
        }, iter: 300);
    }

    /// <summary>The file a tool would write for <paramref name="vm"/>, its fields in a random order.</summary>
    private string AsFile(VmDefinition vm, bool relativePaths, Random order)
    {
        string PathOf(string path) => relativePaths ? Path.GetRelativePath(_directory, path) : path;
        var fields = new List<Action<Utf8JsonWriter>>
        {
            w => w.WriteString("name", vm.Name),
            w => w.WriteString("kernel", PathOf(vm.KernelPath)),
            w => w.WriteString("initrd", vm.InitrdPath is null ? null : PathOf(vm.InitrdPath)),
            w => w.WriteString("cmdline", vm.CommandLine),
            w => { if (vm.MemoryBytes % (1 << 30) == 0) w.WriteString("memory", $"{vm.MemoryBytes >> 30}G"); else w.WriteNumber("memory", vm.MemoryBytes); },
            w => w.WriteNumber("cpus", vm.VcpuCount),
            w => w.WriteString("apiSocket", vm.ApiSocketPath is null ? null : PathOf(vm.ApiSocketPath)),
            w => w.WriteString("serialLog", vm.SerialLogPath is null ? null : PathOf(vm.SerialLogPath)),
            w => w.WriteBoolean("dirtyRing", vm.DirtyRing),
            w => { if (vm.DirtyRingEntries is { } entries) w.WriteNumber("dirtyRingEntries", entries); },
            w => w.WriteBoolean("hugepages", vm.HugePages),
            w => w.WriteBoolean("nestedWorkarounds", vm.NestedKvmWorkarounds),
            w =>
            {
                w.WriteStartArray("disks");
                foreach (var disk in vm.Disks)
                {
                    w.WriteStartObject();
                    w.WriteString("path", PathOf(disk.Path));
                    w.WriteBoolean("readOnly", disk.ReadOnly);
                    if (disk.Id is not null) w.WriteString("id", disk.Id);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            },
            w =>
            {
                w.WriteStartArray("nets");
                foreach (var net in vm.Networks)
                {
                    w.WriteStartObject();
                    w.WriteString("mac", NetworkConfig.Format(net.Mac));
                    w.WriteString("tap", net.TapName);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            },
        };
        var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            foreach (var field in fields.OrderBy(_ => order.Next())) field(writer);
            writer.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    [Theory]
    [InlineData("""{"kernel": "bzImage", "cpu": 2}""", "cpu: unknown field (known here: name, kernel,")]
    [InlineData("""{"kernel": "bzImage", "disks": [{"path": "root.img", "readonly": true}]}""", "disks[0].readonly: unknown field; field names are case-sensitive: did you mean 'readOnly'?")]
    [InlineData("""{"kernel": "bzImage", "nets": [{"tap": "tap0", "ip": "10.0.0.2"}]}""", "nets[0].ip: unknown field (known here: tap, mac)")]
    [InlineData("""{}""", "kernel: missing: the kernel to boot (a bzImage or an ELF vmlinux)")]
    [InlineData("""{"kernel": null}""", "kernel: missing: the kernel to boot")]
    [InlineData("""{"kernel": 7}""", "kernel: expected a string, got the number 7")]
    [InlineData("""{"kernel": ""}""", "kernel: empty path")]
    [InlineData("""{"kernel": "vmlinux"}""", "kernel: {dir}/vmlinux does not exist")]
    [InlineData("""{"kernel": "."}""", "kernel: {dir} is a directory, not a file")]
    [InlineData("""{"kernel": "bzImage", "initrd": "initrd.gz"}""", "initrd: {dir}/initrd.gz does not exist")]
    [InlineData("""{"kernel": "bzImage", "name": "web 1"}""", "name: 'web 1' is not a VM name")]
    [InlineData("""{"kernel": "bzImage", "cmdline": ["console=ttyS0"]}""", "cmdline: expected a string, got an array")]
    [InlineData("""{"kernel": "bzImage", "cpus": "2"}""", "cpus: expected a whole number, got the string \"2\"")]
    [InlineData("""{"kernel": "bzImage", "cpus": 1.5}""", "cpus: expected a whole number, got the number 1.5")]
    [InlineData("""{"kernel": "bzImage", "cpus": 0}""", "cpus: 0 is not a number of vCPUs vmm runs: 1 to 32")]
    [InlineData("""{"kernel": "bzImage", "cpus": 33}""", "cpus: 33 is not a number of vCPUs vmm runs: 1 to 32")]
    [InlineData("""{"kernel": "bzImage", "memory": "12Q"}""", "memory: '12Q' has an unknown unit 'Q'")]
    [InlineData("""{"kernel": "bzImage", "memory": "lots"}""", "memory: 'lots' is not a size")]
    [InlineData("""{"kernel": "bzImage", "memory": "8M"}""", "memory: 8 MiB is too little: vmm needs at least 16 MiB")]
    [InlineData("""{"kernel": "bzImage", "memory": 16777217}""", "memory: must be a multiple of 4 KiB")]
    [InlineData("""{"kernel": "bzImage", "memory": -1}""", "memory: expected a size like \"512M\" or a number of bytes, got the number -1")]
    [InlineData("""{"kernel": "bzImage", "memory": true}""", "memory: expected a size like \"512M\" or a number of bytes, got true")]
    [InlineData("""{"kernel": "bzImage", "disks": {"path": "root.img"}}""", "disks: expected an array, got an object")]
    [InlineData("""{"kernel": "bzImage", "disks": ["root.img"]}""", "disks[0]: expected an object, got the string \"root.img\"")]
    [InlineData("""{"kernel": "bzImage", "disks": [{"readOnly": true}]}""", "disks[0].path: missing: the disk's raw image")]
    [InlineData("""{"kernel": "bzImage", "disks": [{"path": "root.img"}, {"path": "home.img"}]}""", "disks[1].path: {dir}/home.img does not exist")]
    [InlineData("""{"kernel": "bzImage", "disks": [{"path": "root.img"}, {"path": "./root.img"}]}""", "disks[1].path: {dir}/root.img is already disks[0]")]
    [InlineData("""{"kernel": "bzImage", "disks": [{"path": "root.img", "readOnly": "yes"}]}""", "disks[0].readOnly: expected true or false, got the string \"yes\"")]
    [InlineData("""{"kernel": "bzImage", "disks": [{"path": "root.img", "id": "an-id-of-21-bytes-xyz"}]}""", "disks[0].id: \"an-id-of-21-bytes-xyz\" is not a disk ID: 1 to 20 bytes")]
    [InlineData("""{"kernel": "bzImage", "nets": [{"mac": "02:00:00:00:00:01"}]}""", "nets[0].tap: missing: the name of the TAP device")]
    [InlineData("""{"kernel": "bzImage", "nets": [{"tap": "tap0", "mac": "01:00:00:00:00:01"}]}""", "nets[0].mac: \"01:00:00:00:00:01\" is not a unicast MAC address like 02:00:00:00:00:01")]
    [InlineData("""{"kernel": "bzImage", "nets": [{"tap": "tap0", "mac": "52:54:00:12:34"}]}""", "nets[0].mac: \"52:54:00:12:34\" is not a unicast MAC address")]
    [InlineData("""{"kernel": "bzImage", "nets": [{"tap": "tap0"}, {"tap": "tap0"}]}""", "nets[1].tap: tap0 is already the TAP of nets[0]")]
    [InlineData("""{"kernel": "bzImage", "nets": [{"tap": "a-tap-name-too-long"}]}""", "nets[0].tap: \"a-tap-name-too-long\" is not an interface name: 1 to 15 bytes")]
    [InlineData("""{"kernel": "bzImage", "nets": [{"tap": "tap/0"}]}""", "nets[0].tap: \"tap/0\" is not an interface name")]
    [InlineData("""{"kernel": "bzImage", "serialLog": "logs/web1.log"}""", "serialLog: the directory {dir}/logs does not exist")]
    [InlineData("""{"kernel": "bzImage", "apiSocket": 1}""", "apiSocket: expected a string, got the number 1")]
    [InlineData("""{"kernel": "bzImage", "dirtyRingEntries": 1024}""", "dirtyRingEntries: sizes the rings of dirtyRing, which is not true")]
    [InlineData("""{"kernel": "bzImage", "dirtyRing": true, "dirtyRingEntries": 1000}""", "dirtyRingEntries: 1000 is not a power of two")]
    [InlineData("""{"kernel": "bzImage", "hugepages": "yes"}""", "hugepages: expected true or false, got the string \"yes\"")]
    [InlineData("""[{"kernel": "bzImage"}]""", "the file: expected an object, got an array")]
    [InlineData("""{"kernel": "bzImage", "disks": [{"path": "root.img", "id": "a", "id": "b"}]}""", "disks[0].id: given twice")]
    public void BadField_IsRefusedWithItsPathAndWhatIsWrong(string json, string expected)
    {
        var e = Assert.Throws<ConfigurationException>(() => Parse(json));

        Assert.StartsWith(expected.Replace("{dir}", _directory), e.Message);
    }

    [Theory]
    [InlineData("""{"kernel": "bzImage",}""", "not valid JSON at line 1, byte 22:")]
    [InlineData("{\n  \"kernel\": \"bzImage\",\n  \"cpus\": 2\n  \"memory\": \"1G\"\n}", "not valid JSON at line 4, byte 3:")]
    [InlineData("", "not valid JSON at line 1, byte 1:")]
    public void MalformedJson_SaysWhere(string json, string expected)
    {
        var e = Assert.Throws<ConfigurationException>(() => Parse(json));

        Assert.StartsWith(expected, e.Message);
    }

    [Fact]
    public void BytesThatAreNotUtf8_AreRefusedWithTheirPosition()
    {
        byte[] json = [.. Encoding.UTF8.GetBytes("{\"kernel\": \"bz"), 0xeb, .. Encoding.UTF8.GetBytes("Image\"}")];

        var e = Assert.Throws<ConfigurationException>(() => VmConfigFile.Parse(json, _directory));

        Assert.Equal("not UTF-8 text: byte 15 is not part of a UTF-8 character", e.Message);
    }

    [Fact]
    public void Read_NamesTheFileInItsErrors()
    {
        string file = InDirectory("vm.json");
        File.WriteAllText(file, """{"kernel": "bzImage", "cpus": 64}""");

        Assert.Equal($"--config {file}: cpus: 64 is not a number of vCPUs vmm runs: 1 to 32", Assert.Throws<ConfigurationException>(() => VmConfigFile.Read(file)).Message);
        Assert.Equal($"--config {InDirectory("none.json")} does not exist", Assert.Throws<ConfigurationException>(() => VmConfigFile.Read(InDirectory("none.json"))).Message);
    }

    /// <summary>Every setting a VM has, in one line, so two VMs compare with a readable difference.</summary>
    internal static string Describe(VmDefinition vm)
    {
        var config = vm.ToMachineConfig(Stream.Null);
        return string.Join("\n",
            $"name={config.Name} kernel={config.KernelPath} initrd={config.InitrdPath} cmdline={config.CommandLine}",
            $"memory={config.MemoryBytes} cpus={config.VcpuCount}",
            $"disks={string.Join(";", config.Disks.Select(d => $"{d.Path},{d.ReadOnly},{d.Id}"))}",
            $"nets={string.Join(";", config.Networks.Select(n => $"{n.TapName},{NetworkConfig.Format(n.Mac)}"))}",
            $"dirtyRing={config.DirtyRing},{config.DirtyRingEntries} hugepages={config.HugePages} nested={config.NestedKvmWorkarounds}",
            $"apiSocket={vm.ApiSocketPath} serialLog={vm.SerialLogPath}");
    }
}
