using CommandLine;
using Vmm.Devices.Virtio;
using Vmm.Memory;
using Vmm.Vm;

namespace Vmm.Cli;

[Verb("run", HelpText = "Boot a Linux kernel (bzImage or ELF vmlinux) in a new VM, console on the terminal.")]
public sealed class RunOptions
{
    [Option("config", HelpText = "Boot the VM described in this JSON file (README: \"Config file\"; docs/vm-config.schema.json). It describes the whole VM, so of the other options only -v can be given with it.")]
    public string? Config { get; set; }

    [Option("name", HelpText = "The VM's name, for tools: vmm ctl status shows it, and it travels with the VM when it migrates (a target's --api-socket and --serial-log can use it). 1 to 64 letters, digits, '.', '_' or '-'. Default: the kernel's (or snapshot's) file name and a short random suffix.")]
    public string? Name { get; set; }

    [Option("kernel", HelpText = "Kernel to boot: a bzImage or an ELF vmlinux. Required unless --restore is given.")]
    public string? Kernel { get; set; }

    [Option("restore", HelpText = "Continue the VM saved in this snapshot directory (vmm ctl snapshot) instead of booting; its memory, vCPUs, disks and TAPs come from the snapshot.")]
    public string? Restore { get; set; }

    [Option("initrd", HelpText = "Initramfs (cpio, optionally compressed) for the kernel.")]
    public string? Initrd { get; set; }

    [Option("cmdline", HelpText = "Kernel command line. Default: \"" + Vm.MachineConfig.DefaultCommandLine + "\".")]
    public string? CommandLine { get; set; }

    [Option("memory", HelpText = "Guest RAM, e.g. 512M or 2G (powers of 1024). Default: 256M.")]
    public string? Memory { get; set; }

    [Option("cpus", HelpText = "Number of vCPUs, 1 to 32; the guest finds them in an MP table. Default: 1.")]
    public int? Cpus { get; set; }

    [Option("disk", HelpText = "A virtio-blk disk: PATH[,ro][,id=NAME], a raw image whose size is a multiple of 512. Repeatable: vda, vdb, ...")]
    public IEnumerable<string> Disks { get; set; } = [];

    [Option("net", HelpText = "A virtio-net interface on a TAP device: tap=NAME[,mac=XX:XX:XX:XX:XX:XX]. Repeatable: eth0, eth1, ...")]
    public IEnumerable<string> Networks { get; set; } = [];

    [Option("api-socket", HelpText = "Serve the VM's control socket here (unix socket; see vmm ctl): status, pause, resume, snapshot, migrate.")]
    public string? ApiSocket { get; set; }

    [Option("dirty-ring", HelpText = "Track dirty pages for live migration with KVM's per-vCPU dirty rings instead of the dirty log (where KVM offers them).")]
    public bool DirtyRing { get; set; }

    [Option("dirty-ring-entries", HelpText = "With --dirty-ring: entries in each vCPU's ring, a power of two (default 65536, or what KVM allows). A smaller ring makes vCPUs stop more often to have it harvested.")]
    public int? DirtyRingEntries { get; set; }

    [Option("serial-log", HelpText = "Append the guest's serial console to this file instead of stdout.")]
    public string? SerialLog { get; set; }

    [Option("hugepages", HelpText = "Advise guest RAM for transparent huge pages (2 MiB): fewer TLB misses for the guest on hardware KVM, and one fault per 2 MiB on first touch; RAM is then committed 2 MiB at a time, and where the kernel compacts memory on a fault (THP defrag 'madvise') first touch can be slower (see docs/hugepages.md).")]
    public bool HugePages { get; set; }

    [Option("no-nested-workarounds", HelpText = "On a nested kvm_pvm host, do not add guest kernel options or complete int3/fwait emulation failures.")]
    public bool NoNestedWorkarounds { get; set; }

    [Option('v', "verbose", HelpText = "Also log debug messages (e.g. each unclaimed port or MMIO address, once).")]
    public bool Verbose { get; set; }

    /// <summary>The options given that describe the machine itself, which a snapshot or a config file describes instead.</summary>
    public IEnumerable<string> GivenMachineOptions()
    {
        if (Kernel is not null) yield return "--kernel";
        if (Initrd is not null) yield return "--initrd";
        if (CommandLine is not null) yield return "--cmdline";
        if (Memory is not null) yield return "--memory";
        if (Cpus is not null) yield return "--cpus";
        if (Disks.Any()) yield return "--disk";
        if (Networks.Any()) yield return "--net";
    }

    /// <summary>The options given that say how this host runs the VM (a config file says that too).</summary>
    public IEnumerable<string> GivenHostOptions()
    {
        if (Name is not null) yield return "--name";
        if (Restore is not null) yield return "--restore";
        if (ApiSocket is not null) yield return "--api-socket";
        if (SerialLog is not null) yield return "--serial-log";
        if (DirtyRing) yield return "--dirty-ring";
        if (DirtyRingEntries is not null) yield return "--dirty-ring-entries";
        if (HugePages) yield return "--hugepages";
        if (NoNestedWorkarounds) yield return "--no-nested-workarounds";
    }

    /// <summary>The VM these options describe to boot; a bad value is a <see cref="ConfigurationException"/> naming the option.</summary>
    public VmDefinition ToVmDefinition()
    {
        if (Kernel is null) throw new ConfigurationException("--kernel is required (or --restore DIR to continue a snapshot, or --config FILE)");
        if (DirtyRingEntries is not null && !DirtyRing)
            throw new ConfigurationException("--dirty-ring-entries sizes the rings of --dirty-ring, which is not given");
        ulong memoryBytes = MachineConfig.DefaultMemoryBytes;
        if (Memory is not null && !MemorySize.TryParse(Memory, out memoryBytes, out string error))
            throw new ConfigurationException($"--memory: {error}");
        var disks = Disks.Select(text => BlockDiskConfig.TryParse(text, out var disk, out string diskError) ? disk! : throw new ConfigurationException(diskError));
        var networks = Networks.Select(text => NetworkConfig.TryParse(text, out var network, out string netError) ? network! : throw new ConfigurationException(netError));
        return new VmDefinition
        {
            Name = Name is null ? VmName.Derive(Kernel) : VmName.Check(Name, "--name"),
            KernelPath = Kernel,
            InitrdPath = Initrd,
            CommandLine = CommandLine ?? MachineConfig.DefaultCommandLine,
            MemoryBytes = memoryBytes,
            VcpuCount = Cpus ?? 1,
            Disks = [.. disks],
            Networks = [.. networks],
            ApiSocketPath = ApiSocket,
            SerialLogPath = SerialLog,
            DirtyRing = DirtyRing,
            DirtyRingEntries = DirtyRingEntries,
            HugePages = HugePages,
            NestedKvmWorkarounds = !NoNestedWorkarounds,
        };
    }
}
