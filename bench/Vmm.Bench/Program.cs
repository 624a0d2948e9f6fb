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
// `write-pvh-idle-guest FILE spin|hlt` writes the idle guest QEMU runs in bench/migration.sh's side-by-side rows: a
// 32-bit ELF with a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), which `qemu-system-x86_64 -M microvm -kernel` boots.
// It writes no memory, so the guest RAM keeps what its backing file holds. `spin` loops on `pause`, keeping its vCPU
// busy as the vmm guest does between ticks (it spins on the TSC); `hlt` stops the vCPU with interrupts off.
if (args is ["write-pvh-idle-guest", var pvhFile, var idle and ("spin" or "hlt")])
{
    File.WriteAllBytes(pvhFile, idle == "spin" ? Vmm.Bench.PvhGuest.Spinning() : Vmm.Bench.PvhGuest.Halted());
    return 0;
}
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
