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
// `write-dirtying-guest FILE REGION_MIB DIRTY_MIB_PER_S fill|zero [pvh]` writes the migration benchmark's guest:
// a region filled with random data (or left zero) that it then dirties at the given rate, forever. With `pvh`, the
// same guest wrapped for QEMU (`-M microvm -kernel`: a PVH entry that turns on long mode; see PvhGuest).
if (args is ["write-dirtying-guest", var file, var regionMiB, var rate, var content, .. var rest] && rest is [] or ["pvh"])
{
    uint tscKhz;
    using (var kvm = Vmm.Kvm.KvmSystem.Open())
    using (var vm = kvm.CreateVm())
    using (var vcpu = vm.CreateVcpu(0))
        tscKhz = vcpu.GetTscKhz();
    var options = new DirtyingGuestOptions(int.Parse(regionMiB), double.Parse(rate, System.Globalization.CultureInfo.InvariantCulture), tscKhz,
        TickMs: 100, Ticks: 0, FillRandomFirst: content == "fill");
    byte[] elf = FirmwareGuests.DirtyMemoryWithChecksum(options);
    File.WriteAllBytes(file, rest is ["pvh"] ? Vmm.Bench.PvhGuest.FromFirmwareElf(elf) : elf);
    return 0;
}
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
