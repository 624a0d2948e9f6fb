using System.Diagnostics;
using Vmm.Arch;
using Vmm.Boot;
using Vmm.Devices;
using Vmm.Devices.Virtio;
using Vmm.Diagnostics;
using Vmm.Kvm;
using Vmm.Kvm.Interop;
using Vmm.Memory;

namespace Vmm.Vm;

/// <summary>Builds a <see cref="Machine"/> from a <see cref="MachineConfig"/>: the KVM VM with its in-kernel
/// interrupt controllers and PIT, guest RAM, the legacy devices on their ports, the virtio devices, the vCPUs
/// with their CPUID, and (when booting) the MP table and the kernel. Bad configuration is a
/// <see cref="ConfigurationException"/>; whatever was made before a failure is released.</summary>
public static class MachineBuilder
{
    /// <summary>Builds the VM and loads the kernel in <paramref name="config"/>, ready to <see cref="Machine.Run"/>.</summary>
    public static Machine Boot(MachineConfig config, Logger log)
    {
        Validate(config, log);
        if (string.IsNullOrEmpty(config.KernelPath)) throw new ConfigurationException("no kernel given (--kernel)");
        return Build(config, log, memoryImagePath: null);
    }

    /// <summary>Builds the machine a saved state describes, without loading a kernel, for the State layer to
    /// restore into: RAM is mapped lazily from <paramref name="memoryImagePath"/> (a snapshot), or left zeroed for
    /// a migration to fill when it is null.</summary>
    public static Machine ForRestore(MachineConfig config, Logger log, string? memoryImagePath = null)
    {
        Validate(config, log);
        return Build(config, log, memoryImagePath ?? "");
    }

    /// <summary>Builds a machine around RAM that already holds its guest's memory (a standby's last checkpoint),
    /// for a restore. The machine owns <paramref name="memory"/> from here on, and releases it if building fails.</summary>
    public static Machine ForRestore(MachineConfig config, Logger log, GuestMemory memory)
    {
        try
        {
            Validate(config, log);
            var ranges = X86Layout.RamRanges(config.MemoryBytes);
            if (!memory.Regions.Select(r => (r.GuestAddress, r.SizeBytes)).SequenceEqual(ranges))
                throw new ConfigurationException($"the RAM held for the VM does not have the layout of {config.MemoryBytes >> 20} MiB");
        }
        catch
        {
            memory.Dispose();
            throw;
        }
        return Build(config, log, "", memory);
    }

    private static void Validate(MachineConfig config, Logger log)
    {
        if (config.VcpuCount < 1)
            throw new ConfigurationException($"--cpus must be at least 1 (got {config.VcpuCount})");
        if (config.VcpuCount > X86Layout.MaxVcpus)
            throw new ConfigurationException($"--cpus {config.VcpuCount}: vmm runs at most {X86Layout.MaxVcpus} vCPUs");
        if (config.MemoryBytes < X86Layout.MinimumMemoryBytes)
            throw new ConfigurationException($"--memory {config.MemoryBytes >> 20} MiB is too little: vmm needs at least {X86Layout.MinimumMemoryBytes >> 20} MiB");
        if (config.MemoryBytes % GuestMemoryRegion.PageSize != 0)
            throw new ConfigurationException("--memory must be a multiple of 4 KiB");
        string meminfo = HostMemory.ReadMeminfo();
        if (HostMemory.Refusal(config.MemoryBytes, meminfo) is { } refusal) throw new ConfigurationException(refusal);
        if (HostMemory.Warning(config.MemoryBytes, meminfo) is { } warning) log.Warning(warning);
    }

    /// <param name="memoryImagePath">null: boot the kernel; "": zeroed RAM; otherwise RAM mapped from this image.</param>
    /// <param name="adoptedMemory">RAM to use as it is (owned from here on), instead of allocating it.</param>
    private static Machine Build(MachineConfig config, Logger log, string? memoryImagePath, GuestMemory? adoptedMemory = null)
    {
        bool booting = memoryImagePath is null;
        var owned = new Stack<IDisposable>();
        T Own<T>(T disposable) where T : IDisposable
        {
            owned.Push(disposable);
            return disposable;
        }
        if (adoptedMemory is not null) Own(adoptedMemory);
        try
        {
            bool nested = config.NestedKvmHostOverride ?? NestedKvm.IsActiveOnThisHost();
            bool workarounds = nested && config.NestedKvmWorkarounds;
            if (nested && !workarounds)
            {
                log.Warning("nested KVM backend (kvm_pvm) detected but its workarounds are off: a Linux guest is unlikely to boot");
            }

            var kvm = Own(KvmSystem.Open());
            int kvmMaxVcpus = kvm.CheckExtension(KvmCapability.MaxVcpus);
            if (kvmMaxVcpus > 0 && config.VcpuCount > kvmMaxVcpus)
                throw new ConfigurationException($"--cpus {config.VcpuCount}: this host's KVM allows at most {kvmMaxVcpus} vCPUs per VM");
            var supportedCpuid = kvm.GetSupportedCpuid();
            var vcpuCpuid = CpuidForVcpus(kvm, config, supportedCpuid);
            var vm = Own(kvm.CreateVm());
            // Intel needs these pages for real-mode emulation; KVM on AMD accepts and ignores them.
            vm.SetTssAddress(X86Layout.TssAddress);
            vm.SetIdentityMapAddress(X86Layout.IdentityMapAddress);
            vm.CreateIrqchip();
            vm.CreatePit2();

            var ranges = X86Layout.RamRanges(config.MemoryBytes);
            var memory = adoptedMemory ?? Own(string.IsNullOrEmpty(memoryImagePath) ? GuestMemory.Allocate(ranges, config.HugePages) : GuestMemory.MapImage(ranges, memoryImagePath));
            foreach (var region in memory.Regions)
                vm.SetUserMemoryRegion(region.Slot, region.GuestAddress, region.SizeBytes, region.HostAddress);

            var stop = Own(new VmStopLatch());
            var ioPorts = new DeviceBus("port", log);
            var mmio = new DeviceBus("MMIO", log);
            // The device thread is a failure boundary: what escapes a handler stops this VM, not the process.
            var eventLoop = Own(new EventLoop(e => stop.Request(VmStop.FromFailure("device thread", e))));
            var output = new GuestOutputGate();
            var serial = new Serial8250(new GatedOutputStream(config.SerialOutput, output), new KvmInterruptLine(vm, Serial8250.Com1Irq));
            serial.OutputFailed += e => log.Warning($"guest console output failed ({e.Message}); further output is dropped");
            var (i8042, cmos) = AddLegacyDevices(ioPorts, vm, serial, stop, log);

            var virtio = Own(new VirtioMmioDevices());
            var disks = new List<VirtioBlock>();
            for (int i = 0; i < config.Disks.Count; i++)
            {
                var disk = new VirtioBlock(config.Disks[i], config.DiskImagesOpenedAt?[i]);
                virtio.Add($"virtio-blk {config.Disks[i].Path}", disk, vm, mmio, eventLoop, memory, log);
                disks.Add(disk);
            }
            foreach (var network in config.Networks)
            {
                virtio.Add($"virtio-net {network.TapName}", new VirtioNet(network, output), vm, mmio, eventLoop, memory, log);
                log.Info($"virtio-net on TAP {network.TapName}, guest MAC {NetworkConfig.Format(network.Mac)}");
            }
            int dirtyRingBytes = config.DirtyRing ? EnableDirtyRing(vm, config.DirtyRingEntries) : 0;
            var vcpus = new List<KvmVcpu>();
            var dirtyRings = new List<KvmDirtyRing>();
            var shownCpuid = new List<KvmCpuidEntry2[]>();
            for (int i = 0; i < config.VcpuCount; i++)
            {
                var vcpu = Own(vm.CreateVcpu(i));
                vcpus.Add(vcpu);
                if (dirtyRingBytes > 0) dirtyRings.Add(Own(vcpu.MapDirtyRing(dirtyRingBytes)));
                BootCpuState.ApplyCommon(vcpu, vcpuCpuid[i]);
                shownCpuid.Add(vcpu.GetCpuid());
            }

            BootSetup? boot = null;
            if (booting)
            {
                string commandLine = config.CommandLine;
                if (workarounds)
                {
                    // The TSC's frequency comes from a vCPU, so the command line is completed once they exist.
                    string options = NestedKvm.GuestCommandLineOptionsFor(vcpus[0].GetTscKhz());
                    commandLine = $"{commandLine} {options}".Trim();
                    log.Info($"nested KVM backend (kvm_pvm): adding guest kernel options \"{options}\"; int3 and fwait emulation failures are completed by vmm (--no-nested-workarounds turns both off)");
                }
                commandLine = $"{commandLine} {virtio.KernelCommandLine()}".Trim();
                boot = LinuxLoader.Load(memory, config.KernelPath!, config.InitrdPath, commandLine);
                BootCpuState.WriteTables(memory, boot.EntryMode);
                var leaf1 = supportedCpuid.FirstOrDefault(e => e.Function == 1);
                memory.Write(MpTable.Address, MpTable.Build(config.VcpuCount, leaf1.Eax, leaf1.Edx));
                BootCpuState.Apply(vcpus[0], boot.EntryAddress, boot.EntryMode, boot.ZeroPageAddress);
            }
            var stateSupport = new VcpuStateSupport(kvm, vm);
            // Finding the MSRs KVM refuses takes an ioctl per refusal: done now, not in a migration's downtime.
            stateSupport.ReadMsrs(vcpus[0]);

            return new Machine(new MachineParts
            {
                Config = config, Kvm = kvm, Vm = vm, Memory = memory, IoPorts = ioPorts, Mmio = mmio, EventLoop = eventLoop,
                Virtio = virtio, Disks = disks, Serial = serial, Output = output, Devices = [serial, i8042, cmos, .. virtio.Transports], Vcpus = vcpus,
                VcpuCpuid = shownCpuid, DirtyRings = dirtyRings, Stop = stop, StateSupport = stateSupport, Boot = boot, HandleNestedEmulationFailures = workarounds,
            });
        }
        catch
        {
            while (owned.Count > 0) owned.Pop().Dispose();
            throw;
        }
    }

    /// <summary>The table each vCPU is given: a saved VM's, once this host's KVM is found to offer everything it
    /// shows (the VM is refused otherwise, before anything is built); or one computed from what KVM supports.</summary>
    /// <summary>Refuses, without building anything, a VM whose CPUID this host's KVM cannot offer (a standby
    /// checks when replication starts, long before it would build the VM).</summary>
    public static void CheckCpuid(MachineConfig config)
    {
        using var kvm = KvmSystem.Open();
        CpuidForVcpus(kvm, config, kvm.GetSupportedCpuid());
    }

    private static KvmCpuidEntry2[][] CpuidForVcpus(KvmSystem kvm, MachineConfig config, KvmCpuidEntry2[] supported)
    {
        KvmCpuidEntry2[][] tables;
        if (config.VcpuCpuid is { } saved)
        {
            if (saved.Count != config.VcpuCount)
                throw new ConfigurationException($"CPUID given for {saved.Count} vCPUs, but the VM has {config.VcpuCount}");
            var offered = OfferedCpuid(kvm, supported);
            var refusals = saved.Select(table => CpuidCompatibility.Refusal(table, offered)).OfType<string>().Distinct().ToList();
            if (refusals.Count > 0)
                throw new ConfigurationException($"this host's KVM cannot give the guest the CPU it was shown: {string.Join("; ", refusals)}");
            tables = saved.Select(table => table.ToArray()).ToArray();
        }
        else
        {
            tables = Enumerable.Range(0, config.VcpuCount).Select(i => CpuidPolicy.ForVcpu(supported, i, config.VcpuCount)).ToArray();
        }
        if (config.AdjustCpuidForTests is { } adjust)
            foreach (var table in tables) adjust(table);
        return tables;
    }

    /// <summary>What this host's KVM shows a vCPU that asks for everything it supports, read back the way a saved
    /// VM's table was read: KVM_GET_SUPPORTED_CPUID itself on most hosts, but kvm_pvm shows its guests the hardware's
    /// leaves 1 and 7 whatever was set, and a VM saved there carries those. A throwaway VM: the VM being built
    /// may not have a vCPU yet (a dirty ring must be enabled before the first).</summary>
    private static KvmCpuidEntry2[] OfferedCpuid(KvmSystem kvm, KvmCpuidEntry2[] supported)
    {
        using var vm = kvm.CreateVm();
        using var vcpu = vm.CreateVcpu(0);
        vcpu.SetCpuid(supported);
        return vcpu.GetCpuid();
    }

    private static (I8042Controller, CmosRtc) AddLegacyDevices(DeviceBus ioPorts, KvmVm vm, Serial8250 serial, IMachineStop stop, Logger log)
    {
        ioPorts.Register(Serial8250.Com1Port, Serial8250.RegisterCount, serial);
        var i8042 = new I8042Controller(stop, new KvmInterruptLine(vm, I8042Controller.KeyboardIrq));
        ioPorts.Register(I8042Controller.DataPort, 1, i8042);
        ioPorts.Register(I8042Controller.CommandPort, 1, new BusDeviceWindow(i8042, I8042Controller.CommandPort - I8042Controller.DataPort));
        var cmos = new CmosRtc(() => DateTime.UtcNow);
        ioPorts.Register(CmosRtc.Port, CmosRtc.PortCount, cmos);
        ioPorts.Register(BootTimer.Port, 4, new BootTimer(log, SinceProcessStart));
        ioPorts.Register(DebugExitPort.Port, 4, new DebugExitPort(stop));
        return (i8042, cmos);
    }

    private static TimeSpan SinceProcessStart() => DateTime.Now - Process.GetCurrentProcess().StartTime;

    /// <summary>Turns on KVM's per-vCPU dirty rings of <paramref name="requestedEntries"/> entries (16 bytes
    /// each), which KVM wants before any vCPU exists. By default 64 Ki entries (or what KVM allows): at the
    /// ~1.5 GB/s a tracked guest can dirty on a slow host, a ring fills in about 0.2 s, so full rings are rare
    /// between harvests.</summary>
    private static int EnableDirtyRing(KvmVm vm, int? requestedEntries)
    {
        const int DefaultEntries = 64 * 1024;
        int maxBytes = vm.CheckExtension(KvmCapability.DirtyLogRing);
        if (maxBytes <= 0) throw new ConfigurationException("--dirty-ring: this host's KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)");
        int entries = requestedEntries ?? Math.Min(DefaultEntries, maxBytes / KvmDirtyRing.EntryBytes);
        if (entries < 1 || !System.Numerics.BitOperations.IsPow2(entries))
            throw new ConfigurationException($"--dirty-ring-entries {entries}: must be a power of two");
        long bytes = (long)entries * KvmDirtyRing.EntryBytes;
        if (bytes > maxBytes)
            throw new ConfigurationException($"--dirty-ring-entries {entries}: this host's KVM allows at most {maxBytes / KvmDirtyRing.EntryBytes} entries per vCPU");
        try
        {
            vm.EnableCap(KvmCapability.DirtyLogRing, (ulong)bytes);
        }
        catch (KvmException e)
        {
            throw new ConfigurationException($"--dirty-ring-entries {entries}: KVM refused a ring of that size ({e.Message}); it needs room for its reserved entries, try a larger power of two");
        }
        return (int)bytes;
    }
}
