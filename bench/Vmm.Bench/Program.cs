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
// `write-dirtying-guest FILE REGION_MIB DIRTY_MIB_PER_S fill|zero` writes the migration benchmark's guest:
// a region filled with random data (or left zero) that it then dirties at the given rate, forever.
if (args is ["write-dirtying-guest", var file, var regionMiB, var rate, var content])
{
    uint tscKhz;
    using (var kvm = Vmm.Kvm.KvmSystem.Open())
    using (var vm = kvm.CreateVm())
    using (var vcpu = vm.CreateVcpu(0))
        tscKhz = vcpu.GetTscKhz();
    var options = new DirtyingGuestOptions(int.Parse(regionMiB), double.Parse(rate, System.Globalization.CultureInfo.InvariantCulture), tscKhz,
        TickMs: 100, Ticks: 0, FillRandomFirst: content == "fill");
    File.WriteAllBytes(file, FirmwareGuests.DirtyMemoryWithChecksum(options));
    return 0;
}
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
