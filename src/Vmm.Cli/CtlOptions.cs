using CommandLine;

namespace Vmm.Cli;

[Verb("ctl", HelpText = "Send a command to a running VM's control socket (vmm run --api-socket PATH) and print its JSON answer.")]
public sealed class CtlOptions
{
    [Option("socket", Required = true, HelpText = "The VM's control socket.")]
    public string Socket { get; set; } = "";

    [Value(0, Required = true, MetaName = "command", HelpText = "status, stop, pause, resume, snapshot DIR, migrate --to HOST:PORT, replicate --to HOST:PORT (or replicate --stop, replicate --handover); list, against a migrate-receive daemon's --control-socket; failover, against a standby's --api-socket.")]
    public string Command { get; set; } = "";

    [Value(1, MetaName = "path", HelpText = "snapshot: the directory to write the snapshot to.")]
    public string? Path { get; set; }

    [Option("to", HelpText = "migrate: the target's address, HOST:PORT, where 'vmm migrate-receive --listen' runs; replicate: the standby's, where 'vmm standby --listen' runs.")]
    public string? To { get; set; }

    [Option("downtime-ms", Default = 300, HelpText = "migrate: the longest pause the guest may see; the last copy starts once the dirty pages left can be sent in this time.")]
    public int DowntimeMs { get; set; } = 300;

    [Option("timeout-s", Default = 0, HelpText = "migrate: give up after this many seconds (0: no limit); the VM keeps running here. Past the Commit (the target resumes the VM) it no longer applies.")]
    public int TimeoutS { get; set; }

    [Option("max-passes", Default = 30, HelpText = "migrate: the most copy passes before the downtime limit is given up on (see --force).")]
    public int MaxPasses { get; set; } = 30;

    [Option("force", HelpText = "migrate: when --max-passes or --timeout-s is reached, do the last copy anyway (longer downtime) instead of failing.")]
    public bool Force { get; set; }

    [Option("auto-converge", HelpText = "migrate: when a pass does not shrink the dirty pages, slow the vCPUs down (20%, then +10% per pass, up to 99%).")]
    public bool AutoConverge { get; set; }

    [Option("copy-disks", HelpText = "migrate: copy the VM's disk images to the target while the guest runs (storage migration; the target needs --disk-dir). Without it both hosts must see the images at the same paths (shared storage).")]
    public bool CopyDisks { get; set; }

    [Option("interval-ms", Default = 100, HelpText = "replicate: how long each epoch runs; the guest's output waits about this long (plus the commit) before it leaves the host.")]
    public int IntervalMs { get; set; } = 100;

    [Option("stop", HelpText = "replicate: end the replication running; the standby discards its replica and the VM runs on here.")]
    public bool Stop { get; set; }

    [Option("no-wait", HelpText = "replicate --to: answer once replication has started, not once the VM is protected (status shows the first full copy, then protected).")]
    public bool NoWait { get; set; }

    [Option("handover", HelpText = "replicate: a planned, lossless move to the standby: the VM pauses, its last epoch commits there, the standby confirms, and the VM stops here (exit code 0); 'vmm ctl failover' on the standby then resumes it. If the standby does not confirm, the VM runs on here. Only while the VM is protected.")]
    public bool Handover { get; set; }

    [Option("tls-dir", HelpText = "migrate, replicate: mutual TLS with the target, using DIR/ca.pem (the CA to trust), DIR/cert.pem and DIR/key.pem (this host's identity); the target must run 'vmm migrate-receive --tls-dir'.")]
    public string? TlsDir { get; set; }

    [Option("target-not-running", HelpText = "resume: a VM left in doubt by a migration (its target may run it) is resumed without asking the target. Only when you know the target does not run it: otherwise two copies run, and share or fork its disks.")]
    public bool TargetNotRunning { get; set; }

    [Option("connections", Default = 1, HelpText = "migrate: how many TCP connections carry the pages and disk blocks (1 to 16), each sent and received on its own thread at both ends; the target must be a vmm that takes several.")]
    public int Connections { get; set; } = 1;
}
