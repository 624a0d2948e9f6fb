using CommandLine;

namespace Vmm.Cli;

[Verb("migrate-receive", HelpText = "Wait for VMs migrated here by 'vmm ctl migrate' and run them. Disk images must be at the same paths as on the source (shared storage), or travel with the VM (vmm ctl migrate --copy-disks) into the first --disk-dir; TAPs of the same names must exist here.")]
public sealed class MigrateReceiveOptions
{
    [Option("listen", Required = true, HelpText = "ADDRESS:PORT to listen on, e.g. 0.0.0.0:7000 or [::]:7000; port 0 picks a free port (the log says which).")]
    public string Listen { get; set; } = "";

    [Option("tls-dir", HelpText = "Take migrations over mutual TLS only: DIR/ca.pem is the CA whose certificates sources must present, DIR/cert.pem and DIR/key.pem this host's identity.")]
    public string? TlsDir { get; set; }

    [Option("insecure", HelpText = "Without --tls-dir, listen on an address other than loopback anyway: plain TCP, which anyone who reaches the port can send a VM to.")]
    public bool Insecure { get; set; }

    [Option("once", HelpText = "Take one migration, run that VM, and exit with its exit code (2 if the migration failed).")]
    public bool Once { get; set; }

    [Option("max-incoming", Default = 4, HelpText = "How many migrations may come in at the same time; a source beyond that is told the target is busy.")]
    public int MaxIncoming { get; set; } = 4;

    [Option("serial-log", HelpText = "Append each received guest's serial console to this file instead of stdout; {name} is replaced by the VM's name, {n} by the migration's number (1, 2, ...).")]
    public string? SerialLog { get; set; }

    [Option("api-socket", HelpText = "Serve each received VM's control socket here; {name} is replaced by the VM's name, {n} by the migration's number.")]
    public string? ApiSocket { get; set; }

    [Option("control-socket", HelpText = "Serve the daemon's own control socket here: 'vmm ctl --socket PATH list' lists the VMs it runs.")]
    public string? ControlSocket { get; set; }

    [Option("disk-dir", HelpText = "A directory whose disk images incoming VMs may open (repeatable). The stream names the paths, so without this a VM with disks is refused: a sender must not be able to open any file on this host. Disk images copied with the VM (--copy-disks) are written into the first one, under their file names on the source; an existing file is never replaced.")]
    public IEnumerable<string> DiskDirs { get; set; } = [];

    [Option("paused", HelpText = "Keep each received VM paused until 'vmm ctl resume' (its control socket: --api-socket): to look at it, or its disks, before it runs.")]
    public bool Paused { get; set; }

    [Option("dirty-ring", HelpText = "Build received VMs with dirty rings, for when they migrate on from here (see vmm run --dirty-ring).")]
    public bool DirtyRing { get; set; }

    [Option("hugepages", HelpText = "Advise guest RAM for transparent huge pages (2 MiB): fewer TLB misses for the guest on hardware KVM, and one fault per 2 MiB on first touch; RAM is then committed 2 MiB at a time, and where the kernel compacts memory on a fault (THP defrag 'madvise') first touch can be slower (see docs/hugepages.md).")]
    public bool HugePages { get; set; }

    [Option("no-nested-workarounds", HelpText = "On a nested kvm_pvm host, do not complete int3/fwait emulation failures.")]
    public bool NoNestedWorkarounds { get; set; }

    [Option('v', "verbose", HelpText = "Also log debug messages.")]
    public bool Verbose { get; set; }
}
