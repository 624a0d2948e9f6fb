using CommandLine;

namespace Vmm.Cli;

[Verb("standby", HelpText = "Hold a hot standby of a VM replicated here by 'vmm ctl replicate', and resume it when its primary dies: after --failover-timeout-ms of silence, --fence-command must succeed first (without one, 'vmm ctl --socket API failover' resumes it). A VM handed over by 'vmm ctl replicate --handover' is resumed on 'vmm ctl failover', without fencing.")]
public sealed class StandbyOptions
{
    [Option("listen", Required = true, HelpText = "ADDRESS:PORT to take replication on, e.g. 0.0.0.0:7100; port 0 picks a free port (the log says which).")]
    public string Listen { get; set; } = "";

    [Option("name", HelpText = "The one VM this standby holds: a primary replicating any other is refused. Without it, the first VM admitted, and while a lost primary's replica is held, only that VM's primary.")]
    public string? Name { get; set; }

    [Option("disk-dir", Required = true, HelpText = "Where the replicated VM's disk images are kept, under their file names on the primary; an existing file is never replaced.")]
    public string DiskDir { get; set; } = "";

    [Option("tls-dir", HelpText = "Take replication over mutual TLS only (DIR/ca.pem, DIR/cert.pem, DIR/key.pem, as for migrate-receive).")]
    public string? TlsDir { get; set; }

    [Option("insecure", HelpText = "Without --tls-dir, listen on an address other than loopback anyway (a trusted network only).")]
    public bool Insecure { get; set; }

    [Option("fence-command", HelpText = "Run with /bin/sh -c once the primary is silent, before the VM is resumed here. Its job: make sure the primary is dead (power it off, kill it, cut it off). Exit 0 means fenced; anything else, or running past --fence-timeout-s, means the VM is not resumed (until 'vmm ctl failover', the operator's word that the primary is dead). It sees VMM_VM_NAME, VMM_EPOCH and VMM_PRIMARY.")]
    public string? FenceCommand { get; set; }

    [Option("fence-timeout-s", HelpText = "With --fence-command: how long it may run (default 60, at most 86400). Without one: that someone else (e.g. the cluster manager) fences a lost primary within this many seconds; the primary is told, and holds the guest's output that much longer once it loses this standby (not given: 0).")]
    public int? FenceTimeoutS { get; set; }

    /// <summary>How long a fence command may run when --fence-timeout-s does not say.</summary>
    public const int DefaultFenceTimeoutS = 60;

    /// <summary>The longest --fence-timeout-s: a day. The primary is told it in milliseconds (an int32), and holds the
    /// guest's output that long after losing this standby.</summary>
    public const int MaxFenceTimeoutS = 86_400;

    /// <summary>Why these timeouts cannot be used, or null when they can.</summary>
    public string? TimeoutRefusal() =>
        FailoverTimeoutMs is < 50 or > 600_000 ? $"--failover-timeout-ms {FailoverTimeoutMs}: it must be 50-600000"
        : FenceTimeoutS is < 1 or > MaxFenceTimeoutS ? $"--fence-timeout-s {FenceTimeoutS}: it must be 1-{MaxFenceTimeoutS}"
        : null;

    /// <summary>The longest a lost primary may take to be fenced, as told to the primary: by the fence command, or by
    /// whoever fences it when this standby has none (zero: no one does until an operator says so).</summary>
    public TimeSpan FenceTimeout => TimeSpan.FromSeconds(FenceTimeoutS ?? (FenceCommand is null ? 0 : DefaultFenceTimeoutS));

    [Option("failover-timeout-ms", Default = 1000, HelpText = "How long the primary may be silent before it counts as dead.")]
    public int FailoverTimeoutMs { get; set; } = 1000;

    [Option("api-socket", HelpText = "Serve a control socket here: status and failover while standing by, then the resumed VM's own control socket.")]
    public string? ApiSocket { get; set; }

    [Option("serial-log", HelpText = "Append the resumed guest's serial console to this file instead of stdout; {name} is replaced by the VM's name.")]
    public string? SerialLog { get; set; }

    [Option("no-nested-workarounds", HelpText = "On a nested kvm_pvm host, do not complete int3/fwait emulation failures.")]
    public bool NoNestedWorkarounds { get; set; }

    [Option('v', "verbose", HelpText = "Also log debug messages.")]
    public bool Verbose { get; set; }
}
