using CommandLine;

namespace Vmm.Cli;

[Verb("ctl", HelpText = "Send a command to a running VM's control socket (vmm run --api-socket PATH) and print its JSON answer.")]
public sealed class CtlOptions
{
    [Option("socket", Required = true, HelpText = "The VM's control socket.")]
    public string Socket { get; set; } = "";

    [Value(0, Required = true, MetaName = "command", HelpText = "status, pause or resume.")]
    public string Command { get; set; } = "";
}
