using BenchmarkDotNet.Running;
using Vmm.Firmware;

// `write-firmware DIR` writes the firmware guests as ELF files, for timing the vmm binary end to end
// (bench/startup.sh); anything else goes to BenchmarkDotNet.
if (args is ["write-firmware", var directory])
{
    Directory.CreateDirectory(directory);
    File.WriteAllBytes(Path.Combine(directory, "exit.elf"), FirmwareGuests.BootTimerThenExit(0));
    File.WriteAllBytes(Path.Combine(directory, "hello-reset.elf"), FirmwareGuests.PrintThenReset("hello\n"));
    return 0;
}
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
