using Vmm.Firmware;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.EndToEnd;

/// <summary>The `vmm` command as a user runs it: arguments, exit codes, console routing, stdin, signals.
/// Firmware guests keep these fast.</summary>
[Trait("Category", "Process")]
public sealed class CliTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-cli-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private string Image(byte[] elf)
    {
        string path = Path.Combine(_directory, $"guest{Guid.NewGuid():N}.elf");
        File.WriteAllBytes(path, elf);
        return path;
    }

    [Fact]
    public void Run_PrintsTheGuestConsoleOnStdoutAndExitsZeroOnReset()
    {
        var result = VmmProcess.Run(["run", "--kernel", Image(FirmwareGuests.PrintThenReset("console works\n"))], Timeout);

        Assert.Equal(0, result.ExitCode);
        Assert.Equal("console works\n", result.Console);
        Assert.Contains("guest reset (i8042 reset command 0xfe)", result.Log);
    }

    [Fact]
    public void SerialLog_SendsTheConsoleToTheFileInsteadOfStdout()
    {
        string log = Path.Combine(_directory, "serial.log");
        var result = VmmProcess.Run(["run", "--kernel", Image(FirmwareGuests.PrintThenReset("to the file\n")), "--serial-log", log], Timeout);

        Assert.Equal(0, result.ExitCode);
        Assert.Equal("", result.Console);
        Assert.Equal("to the file\n", File.ReadAllText(log));
    }

    /// <summary>A console log is a log: a VM started again (a cluster manager's restart) writes after what was there.</summary>
    [Fact]
    public void SerialLog_AppendsToWhatTheFileHolds()
    {
        string log = Path.Combine(_directory, "serial.log");
        File.WriteAllText(log, "the last boot\n");
        var result = VmmProcess.Run(["run", "--kernel", Image(FirmwareGuests.PrintThenReset("this boot\n")), "--serial-log", log], Timeout);

        Assert.Equal(0, result.ExitCode);
        Assert.Equal("the last boot\nthis boot\n", File.ReadAllText(log));
    }

    [Fact]
    public void SerialLog_InADirectoryThatDoesNotExist_ExitsWithCode2AndSaysSo()
    {
        string log = Path.Combine(_directory, "missing", "serial.log");
        var result = VmmProcess.Run(["run", "--kernel", Image(FirmwareGuests.PrintThenReset("lost\n")), "--serial-log", log], Timeout);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"--serial-log {log} cannot be written", result.Log);
    }

    [Fact]
    public void ExitPort_BecomesTheProcessExitCode()
    {
        var result = VmmProcess.Run(["run", "--kernel", Image(FirmwareGuests.BootTimerThenExit(0x2a))], Timeout);

        Assert.Equal((0x2a << 1) | 1, result.ExitCode);
        Assert.Matches(@"boot timer: guest mark 1 at \d+\.\d ms since vmm started", result.Log);
    }

    [Fact]
    public void TripleFault_ExitsWithTheCrashCodeAndAReportOnStderr()
    {
        var result = VmmProcess.Run(["run", "--kernel", Image(FirmwareGuests.TripleFault())], Timeout);

        Assert.Equal(ExitCodes.Crash, result.ExitCode);
        Assert.Contains("vmm: error: guest crash: triple fault", result.Log);
        Assert.Contains("ud2", result.Log);
    }

    [Fact]
    public void StandardInput_ReachesTheGuestsSerialPort()
    {
        var result = VmmProcess.Run(["run", "--kernel", Image(FirmwareGuests.EchoSerialInput(5))], Timeout, standardInput: "hello");

        Assert.Equal(ExitCodes.FromExitPort(FirmwareGuests.ExitValueSuccess), result.ExitCode);
        Assert.Equal("hello", result.Console);
    }

    [Fact]
    public void Sigterm_StopsARunningGuestWithExitCode143()
    {
        var result = VmmProcess.Run(["run", "--kernel", Image(FirmwareGuests.SpinForever())], Timeout,
            terminateWhen: (_, elapsed) => elapsed > TimeSpan.FromSeconds(2));

        Assert.Equal(ExitCodes.Signal(15), result.ExitCode);
        Assert.Contains("stopped by SIGTERM", result.Log);
    }

    [Theory]
    [InlineData("--memory", "12Q", "unknown unit 'Q'")]
    [InlineData("--memory", "1M", "too little")]
    [InlineData("--cpus", "33", "at most 32 vCPUs")]
    [InlineData("--cpus", "0", "at least 1")]
    [InlineData("--initrd", "/nonexistent/initrd", "initramfs file /nonexistent/initrd does not exist")]
    [InlineData("--memory", "1000T", "is more than this host has")]
    [InlineData("--dirty-ring-entries", "4096", "--dirty-ring, which is not given")]
    [InlineData("--name", "../escape", "is not a VM name")]
    public void BadOptions_ExitWithCode2AndSayWhy(string option, string value, string message)
    {
        var result = VmmProcess.Run(["run", "--kernel", Image(FirmwareGuests.PrintThenReset("x")), option, value], Timeout);

        Assert.Equal(ExitCodes.VmmError, result.ExitCode);
        Assert.Contains(message, result.Log);
    }

    [Fact]
    public void TruncatedBzImage_IsRefusedWithExitCode2()
    {
        var builder = new Boot.BzImageBuilder();
        string kernel = Path.Combine(_directory, "truncated-bzImage");
        File.WriteAllBytes(kernel, builder.Build()[..(builder.ProtectedModeOffset + 100)]);

        var result = VmmProcess.Run(["run", "--kernel", kernel], Timeout);

        Assert.Equal(ExitCodes.VmmError, result.ExitCode);
        Assert.Contains($"{kernel} is truncated", result.Log);
    }

    [Fact]
    public void MissingKernel_ExitsWithCode2()
    {
        var missingOption = VmmProcess.Run(["run"], Timeout);
        var missingFile = VmmProcess.Run(["run", "--kernel", "/nonexistent/vmlinux"], Timeout);

        Assert.Equal(ExitCodes.VmmError, missingOption.ExitCode);
        Assert.Contains("--kernel is required (or --restore DIR to continue a snapshot, or --config FILE)", missingOption.Log);
        Assert.Equal(ExitCodes.VmmError, missingFile.ExitCode);
        Assert.Contains("kernel file /nonexistent/vmlinux does not exist", missingFile.Log);
    }

    [Fact]
    public void Ctl_PausesAndResumesARunningVmThroughItsControlSocket()
    {
        string socket = Path.Combine(_directory, "api.sock");
        string pause = "", status = "", resume = "", unknown = "";
        int pauseExit = -1, unknownExit = -1;
        var result = VmmProcess.Run(["run", "--kernel", Image(FirmwareGuests.SpinForever()), "--api-socket", socket], Timeout,
            terminateWhen: (_, elapsed) =>
            {
                if (!File.Exists(socket)) return elapsed > TimeSpan.FromSeconds(30);
                var p = VmmProcess.Run(["ctl", "--socket", socket, "pause"], Timeout);
                (pause, pauseExit) = (p.Console, p.ExitCode);
                status = VmmProcess.Run(["ctl", "--socket", socket, "status"], Timeout).Console;
                resume = VmmProcess.Run(["ctl", "--socket", socket, "resume"], Timeout).Console;
                var u = VmmProcess.Run(["ctl", "--socket", socket, "reboot"], Timeout);
                (unknown, unknownExit) = (u.Console, u.ExitCode);
                return true;
            });

        Assert.Equal(0, pauseExit);
        Assert.Contains("\"state\":\"paused\"", pause);
        Assert.Contains("\"state\":\"paused\"", status);
        Assert.Contains("\"state\":\"running\"", resume);
        Assert.Equal(1, unknownExit);
        Assert.Contains("unknown command", unknown);
        Assert.Equal(ExitCodes.Signal(15), result.ExitCode);
        Assert.False(File.Exists(socket));
    }

    private string ConfigFile(string json)
    {
        string path = Path.Combine(_directory, "vm.json");
        File.WriteAllText(path, json);
        return path;
    }

    [Fact]
    public void RunConfig_BootsTheVmInTheFile_WithItsNameOnItsApiSocket()
    {
        string kernel = Path.GetFileName(Image(FirmwareGuests.SpinForever()));
        string socket = Path.Combine(_directory, "web1.sock");
        string status = "";
        // Relative paths: the file's directory, not the test's working directory.
        var result = VmmProcess.Run(["run", "--config", ConfigFile($$"""{"name": "web1", "kernel": "{{kernel}}", "apiSocket": "web1.sock"}""")], Timeout,
            terminateWhen: (_, elapsed) =>
            {
                if (!File.Exists(socket)) return elapsed > TimeSpan.FromSeconds(30);
                status = VmmProcess.Run(["ctl", "--socket", socket, "status"], Timeout).Console;
                return true;
            });

        Assert.Contains("\"name\":\"web1\"", status);
        Assert.Contains("\"state\":\"running\"", status);
        Assert.Equal(ExitCodes.Signal(15), result.ExitCode);
    }

    [Fact]
    public void RunConfig_SendsTheConsoleToTheFilesSerialLog_AndExitsAsTheGuestDoes()
    {
        string kernel = Path.GetFileName(Image(FirmwareGuests.PrintThenReset("from a config file\n")));
        var result = VmmProcess.Run(["run", "-v", "--config", ConfigFile($$"""{"kernel": "{{kernel}}", "serialLog": "console.log", "memory": "64M"}""")], Timeout);

        Assert.Equal(0, result.ExitCode);
        Assert.Equal("", result.Console);
        Assert.Equal("from a config file\n", File.ReadAllText(Path.Combine(_directory, "console.log")));
    }

    [Fact]
    public void RunConfig_RefusesABadFieldOrAnOptionBesideIt_WithExitCode2()
    {
        string kernel = Path.GetFileName(Image(FirmwareGuests.PrintThenReset("never\n")));
        string file = ConfigFile($$"""{"kernel": "{{kernel}}", "disks": [{"path": "none.img"}]}""");

        var badField = VmmProcess.Run(["run", "--config", file], Timeout);
        var withOption = VmmProcess.Run(["run", "--config", file, "--kernel", kernel, "--api-socket", "x.sock"], Timeout);

        Assert.Equal(ExitCodes.VmmError, badField.ExitCode);
        Assert.Contains($"vmm: error: --config {file}: disks[0].path: {_directory}/none.img does not exist", badField.Log);
        Assert.Equal(ExitCodes.VmmError, withOption.ExitCode);
        Assert.Contains("--config describes the whole VM; --kernel, --api-socket cannot be given with it (only -v can)", withOption.Log);
        Assert.Equal("", badField.Console + withOption.Console);
    }

    [Fact]
    public void Ctl_WithNoVmAtTheSocket_ExitsWithCode2()
    {
        var result = VmmProcess.Run(["ctl", "--socket", Path.Combine(_directory, "none.sock"), "status"], Timeout);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("cannot reach the control socket", result.Log);
    }

    [Fact]
    public async Task Ctl_ToASocketThatIsNotVmms_SaysSoInsteadOfCrashing()
    {
        string path = Path.Combine(_directory, "other.sock");
        using var listener = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        listener.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var other = Task.Run(() =>
        {
            using var client = listener.Accept();
            client.Send("220 not a vmm\n"u8);
            client.Receive(new byte[4096]);
        });

        var result = VmmProcess.Run(["ctl", "--socket", path, "status"], Timeout);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("answered with something that is not JSON", result.Log);
        await other.WaitAsync(Timeout);
    }

    [Fact]
    public void HelpAndVersion_ExitZero()
    {
        var help = VmmProcess.Run(["run", "--help"], Timeout);
        var version = VmmProcess.Run(["--version"], Timeout);

        Assert.Equal(0, help.ExitCode);
        Assert.Contains("--kernel", help.Console);
        Assert.Contains("Exit codes of 'vmm run'", help.Console);
        Assert.Equal(0, version.ExitCode);
        Assert.StartsWith("vmm ", version.Console);
    }
}
