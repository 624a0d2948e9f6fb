using System.Buffers.Binary;
using Vmm.Kvm;

namespace Vmm.Arch;

/// <summary>Local APIC setup for boot: LINT0 as ExtINT (the legacy PIC's output) and LINT1 as NMI, as
/// a PC's BIOS leaves them (Intel SDM 10.5.1; the MP spec's virtual-wire mode).</summary>
public static class LocalApic
{
    private const int Lvt0Offset = 0x350, Lvt1Offset = 0x360;
    private const uint DeliveryModeMask = 0x700, DeliveryExtInt = 0x700, DeliveryNmi = 0x400;

    public static void ConfigureVirtualWire(KvmVcpu vcpu)
    {
        var lapic = vcpu.GetLapic();
        Span<byte> registers = lapic.Registers;
        SetDeliveryMode(registers[Lvt0Offset..], DeliveryExtInt);
        SetDeliveryMode(registers[Lvt1Offset..], DeliveryNmi);
        vcpu.SetLapic(lapic);
    }

    private static void SetDeliveryMode(Span<byte> register, uint mode)
    {
        uint value = BinaryPrimitives.ReadUInt32LittleEndian(register);
        BinaryPrimitives.WriteUInt32LittleEndian(register, (value & ~DeliveryModeMask) | mode);
    }
}
