using Vmm.Kvm;
using Vmm.Kvm.Interop;
using Vmm.Serialization;

namespace Vmm.State;

/// <summary>The VM-wide state KVM emulates in the kernel: both PICs, the IOAPIC, the PIT and kvmclock.</summary>
public sealed class PlatformState
{
    public required KvmIrqchip PicMaster { get; init; }
    public required KvmIrqchip PicSlave { get; init; }
    public required KvmIrqchip Ioapic { get; init; }
    public required KvmPitState2 Pit { get; init; }
    public required KvmClockData Clock { get; init; }

    public static PlatformState Capture(KvmVm vm) => new()
    {
        PicMaster = vm.GetIrqchip(KvmVm.IrqchipPicMaster),
        PicSlave = vm.GetIrqchip(KvmVm.IrqchipPicSlave),
        Ioapic = vm.GetIrqchip(KvmVm.IrqchipIoapic),
        Pit = vm.GetPit2(),
        Clock = vm.GetClock(),
    };

    public void Restore(KvmVm vm)
    {
        vm.SetIrqchip(PicMaster);
        vm.SetIrqchip(PicSlave);
        vm.SetIrqchip(Ioapic);
        vm.SetPit2(Pit);
        // Only the clock value: the guest's kvmclock continues from where it stopped; the time it spent
        // paused or in flight is not added (KVM_CLOCK_REALTIME would need synchronized host clocks).
        vm.SetClock(new KvmClockData { Clock = Clock.Clock });
    }

    public void Write(StateWriter w)
    {
        w.WriteStruct(PicMaster);
        w.WriteStruct(PicSlave);
        w.WriteStruct(Ioapic);
        w.WriteStruct(Pit);
        w.WriteStruct(Clock);
    }

    public static PlatformState Read(StateReader r)
    {
        var state = new PlatformState
        {
            PicMaster = r.ReadStruct<KvmIrqchip>("master PIC"),
            PicSlave = r.ReadStruct<KvmIrqchip>("slave PIC"),
            Ioapic = r.ReadStruct<KvmIrqchip>("IOAPIC"),
            Pit = r.ReadStruct<KvmPitState2>("PIT"),
            Clock = r.ReadStruct<KvmClockData>("kvmclock"),
        };
        if (state.PicMaster.ChipId != KvmVm.IrqchipPicMaster || state.PicSlave.ChipId != KvmVm.IrqchipPicSlave || state.Ioapic.ChipId != KvmVm.IrqchipIoapic)
            throw new StateFormatException("interrupt controller state: chip ids out of order");
        return state;
    }
}
