using System.Text;
using Vmm.Arch;
using Vmm.Devices.Virtio;
using Vmm.Vm;

namespace Vmm.Fuzz;

/// <summary><c>vmm run --config FILE</c>'s parser (<see cref="VmConfigFile"/>) on any bytes: it accepts or refuses
/// with a <see cref="ConfigurationException"/>, and what it accepts holds (a valid name, vCPUs and RAM vmm runs,
/// disks that exist and appear once, TAPs once, unicast MACs, absolute paths).</summary>
public sealed class ConfigFileTarget : IFuzzTarget
{
    private static readonly string[] Files = ["bzImage", "initrd", "root.img", "data.img"];

    // Relative paths resolve here, and the files that must exist do: one fixed directory, made once, so neither
    // the fuzzer's executions nor its processes leave a directory each behind.
    private static readonly Lazy<string> FilesDirectory = new(() =>
    {
        string directory = Path.Combine(Path.GetTempPath(), "vmm-fuzz-config");
        Directory.CreateDirectory(directory);
        foreach (string file in Files)
            if (!File.Exists(Path.Combine(directory, file))) File.WriteAllBytes(Path.Combine(directory, file), new byte[512]);
        return directory;
    });

    public string Name => "config";

    public string? Run(ReadOnlySpan<byte> input)
    {
        VmDefinition vm;
        try
        {
            vm = VmConfigFile.Parse(input.ToArray(), FilesDirectory.Value);
        }
        catch (ConfigurationException e)
        {
            return e.Message;
        }
        string? broken =
            !VmName.IsValid(vm.Name) ? "an invalid name" :
            vm.VcpuCount is < 1 or > X86Layout.MaxVcpus ? "a vCPU count vmm does not run" :
            vm.MemoryBytes < X86Layout.MinimumMemoryBytes || vm.MemoryBytes % 4096 != 0 ? "a RAM size vmm does not run" :
            !File.Exists(vm.KernelPath) || (vm.InitrdPath is { } initrd && !File.Exists(initrd)) ? "a kernel or initrd that does not exist" :
            vm.Disks.Any(d => !File.Exists(d.Path)) || vm.Disks.DistinctBy(d => d.Path).Count() != vm.Disks.Count ? "a disk that does not exist or appears twice" :
            vm.Networks.DistinctBy(n => n.TapName).Count() != vm.Networks.Count ? "a TAP that appears twice" :
            vm.Networks.Any(n => n.Mac.Length != 6 || (n.Mac[0] & 1) != 0) ? "a MAC that is not unicast" :
            new[] { vm.KernelPath, vm.InitrdPath, vm.ApiSocketPath, vm.SerialLogPath }.Concat(vm.Disks.Select(d => d.Path)).Any(p => p is not null && !Path.IsPathFullyQualified(p)) ? "a relative path" :
            vm.DirtyRingEntries is { } entries && (!vm.DirtyRing || (entries & (entries - 1)) != 0 || entries <= 0) ? "dirty ring entries without a ring or not a power of two" :
            null;
        if (broken is not null)
            throw new InvalidOperationException($"a config file with {broken} was accepted: {Encoding.UTF8.GetString(input)}");
        return null;
    }

    public IEnumerable<byte[]> Generate(int count, int seed) => Mutations.Mix(count, seed, random =>
    {
        // Each field's candidates: mostly valid values, some that break one rule.
        (string Field, string[] Values)[] fields =
        [
            ("name", ["\"web1\"", "\"a.b_c-d\"", "\"-bad\"", "\"\"", "null"]),
            ("initrd", ["\"initrd\"", "null", "\"missing.cpio\"", "\"\""]),
            ("cmdline", ["\"console=ttyS0\"", "\"\"", "null", "[]"]),
            ("memory", ["\"512M\"", "\"2G\"", "67108864", "\"8M\"", "\"1Q\"", "-1", "1.5", "16777217"]),
            ("cpus", ["2", "32", "0", "33", "\"2\"", "2.0"]),
            ("disks", ["[{\"path\":\"root.img\",\"readOnly\":true,\"id\":\"root\"},{\"path\":\"data.img\"}]", "[{\"path\":\"root.img\"},{\"path\":\"./root.img\"}]",
                       "[{\"path\":\"/nonexistent.img\"}]", "[{\"readonly\":true}]", "[\"root.img\"]", "{}", "[]"]),
            ("nets", ["[{\"tap\":\"tap0\",\"mac\":\"52:54:00:12:34:56\"},{\"tap\":\"tap1\"}]", "[{\"tap\":\"tap0\"},{\"tap\":\"tap0\"}]",
                      "[{\"tap\":\"tap0\",\"mac\":\"01:00:00:00:00:00\"}]", "[{\"tap\":\"a/b\"}]", "[{\"mac\":\"02:00:00:00:00:01\"}]"]),
            ("apiSocket", ["\"web1.sock\"", "\"/nonexistent/dir/x.sock\"", "null"]),
            ("serialLog", ["\"console.log\"", "\"\"", "null"]),
            ("dirtyRing", ["true", "false", "\"yes\""]),
            ("dirtyRingEntries", ["1024", "1000", "0", "null"]),
            ("hugepages", ["true", "false", "null"]),
            ("nestedWorkarounds", ["false", "true", "1"]),
            ("kernal", ["\"bzImage\""]),
        ];
        var chosen = new List<string> { random.Next(10) == 0 ? "\"kernel\":\"vmlinux\"" : "\"kernel\":\"bzImage\"" };
        foreach (var (field, values) in fields)
            if (random.Next(3) == 0) chosen.Add($"\"{field}\":{values[random.Next(values.Length)]}");
        return Encoding.UTF8.GetBytes("{" + string.Join(",", chosen.OrderBy(_ => random.Next())) + "}");
    }, maxRandomBytes: 256);
}
