using System.Diagnostics.CodeAnalysis;
using CommandLine;
using CommandLine.Text;
using Vmm.Vm;

namespace Vmm.Cli;

public static class Program
{
    // CommandLineParser builds option objects by reflection; these keep their members through trimming
    // so the NativeAOT binary parses exactly like the JIT one.
    [DynamicDependency(DynamicallyAccessedMemberTypes.All, typeof(RunOptions))]
    [DynamicDependency(DynamicallyAccessedMemberTypes.All, typeof(CtlOptions))]
    [DynamicDependency(DynamicallyAccessedMemberTypes.All, typeof(MigrateReceiveOptions))]
    [DynamicDependency(DynamicallyAccessedMemberTypes.All, typeof(StandbyOptions))]
    public static int Main(string[] args)
    {
        // The last failure boundary: an exception that escapes a command is a bug in vmm, reported as such.
        try
        {
            return Execute(args);
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"vmm: internal error (please report it): {e}");
            return ExitCodes.Crash;
        }
    }

    private static int Execute(string[] args)
    {
        using var parser = new Parser(settings =>
        {
            settings.HelpWriter = null;
            settings.CaseInsensitiveEnumValues = true;
            settings.AllowMultiInstance = true;
        });
        ParserResult<object> result = parser.ParseArguments(args, typeof(RunOptions), typeof(CtlOptions), typeof(MigrateReceiveOptions), typeof(StandbyOptions));
        return result switch
        {
            Parsed<object> { Value: RunOptions run } => RunCommand.Execute(run),
            Parsed<object> { Value: CtlOptions ctl } => CtlCommand.Execute(ctl),
            Parsed<object> { Value: MigrateReceiveOptions receive } => MigrateReceiveCommand.Execute(receive),
            Parsed<object> { Value: StandbyOptions standby } => StandbyCommand.Execute(standby),
            NotParsed<object> notParsed => ReportParseErrors(notParsed),
            _ => ExitCodes.VmmError,
        };
    }

    private static int ReportParseErrors(NotParsed<object> result)
    {
        bool helpOrVersion = result.Errors.All(e => e.Tag is ErrorType.HelpRequestedError or ErrorType.HelpVerbRequestedError or ErrorType.VersionRequestedError);
        var help = HelpText.AutoBuild(result, h =>
        {
            h.AdditionalNewLineAfterOption = false;
            h.AddDashesToOption = true;
            h.Heading = $"vmm {typeof(Program).Assembly.GetName().Version?.ToString(3)}: a minimal KVM hypervisor";
            h.Copyright = "";
            h.AddPostOptionsLines(ExitCodeHelp);
            return h;
        }, e => e, verbsIndex: true);
        if (result.Errors.Any(e => e.Tag == ErrorType.VersionRequestedError))
        {
            Console.Out.WriteLine($"vmm {typeof(Program).Assembly.GetName().Version?.ToString(3)}");
            return ExitCodes.GuestFinished;
        }
        if (helpOrVersion)
        {
            Console.Out.WriteLine(help);
            return ExitCodes.GuestFinished;
        }
        var sentences = SentenceBuilder.Create();
        foreach (string line in HelpText.RenderParsingErrorsTextAsLines(result, sentences.FormatError, sentences.FormatMutuallyExclusiveSetErrors, 0))
            Console.Error.WriteLine($"vmm: error: {line}");
        Console.Error.WriteLine("Run 'vmm run --help' for the options.");
        return ExitCodes.VmmError;
    }

    private static readonly string[] ExitCodeHelp =
    [
        "Exit codes of 'vmm run':",
        "  0    the guest reset or powered off",
        "  odd  the guest wrote V to port 0x501 (QEMU isa-debug-exit): (V << 1) | 1",
        "  2    vmm error: bad arguments, missing or invalid files, KVM unavailable",
        "  4    crash: the guest's (triple fault, failed VM entry, unexpected exit) or vmm's own (report on stderr)",
        "  6    emulation failure KVM could not handle (report with the instruction on stderr)",
        "  128+N  stopped by signal N (130: SIGINT, 143: SIGTERM)",
    ];
}
