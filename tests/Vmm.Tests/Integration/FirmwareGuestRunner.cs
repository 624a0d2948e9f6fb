using System.Text;
using Vmm.Diagnostics;
using Vmm.Vm;

namespace Vmm.Tests.Integration;

/// <summary>Runs a firmware guest (an ELF image from Vmm.Firmware) in-process and collects what it did.</summary>
internal sealed class FirmwareGuestRunner : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-fw-").FullName;

    public sealed record Result(VmStop Stop, string Console, string Log);

    public string WriteImage(byte[] elf, string name = "guest.elf")
    {
        string path = Path.Combine(_directory, name);
        File.WriteAllBytes(path, elf);
        return path;
    }

    /// <param name="prepare">Runs on the built machine before it starts (a test places its own devices).</param>
    public Result Run(byte[] elf, Func<MachineConfig, MachineConfig>? adjust = null, TimeSpan? timeout = null, Action<Machine>? prepare = null)
    {
        var console = new MemoryStream();
        var logText = new StringWriter();
        var config = new MachineConfig
        {
            KernelPath = WriteImage(elf),
            MemoryBytes = 64UL << 20,
            SerialOutput = console,
        };
        if (adjust is not null) config = adjust(config);
        using var machine = MachineBuilder.Boot(config, new Logger(TextWriter.Synchronized(logText), LogLevel.Debug));
        prepare?.Invoke(machine);
        var run = Task.Run(machine.Run);
        if (!run.Wait(timeout ?? TimeSpan.FromSeconds(60)))
        {
            machine.RequestStop(VmStop.Error("test timeout"));
            run.Wait();
            throw new TimeoutException($"firmware guest did not stop; console so far: {Encoding.ASCII.GetString(console.ToArray())}");
        }
        return new Result(run.Result, Encoding.ASCII.GetString(console.ToArray()), logText.ToString());
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);
}
