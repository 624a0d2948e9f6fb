using Iced.Intel;
using Vmm.Kvm;

namespace Vmm.Vm;

/// <summary>Finishes, from user space, the few instructions the nested backend's emulator rejects when
/// doing so is exact: <c>int3</c> becomes the #BP it would raise (RIP past it, vector 3 injected), and
/// <c>fwait</c> with no x87 exception pending is a no-op. Everything else stays an emulation failure.</summary>
public static class EmulationFailureHandler
{
    private const byte BreakpointVector = 3;
    private const ushort FpuStatusErrorSummary = 0x80;

    /// <summary>Returns true when the instruction was completed and the vCPU can run on.</summary>
    public static bool TryHandle(KvmVcpu vcpu, ReadOnlySpan<byte> instructionBytes, int bitness)
    {
        if (instructionBytes.IsEmpty) return false;
        var decoder = Decoder.Create(bitness, new ByteArrayCodeReader(instructionBytes.ToArray()));
        decoder.Decode(out var instruction);
        switch (instruction.Code)
        {
            case Code.Int3:
                AdvanceRip(vcpu, instruction.Length);
                // A trap: the guest's #BP handler sees RIP after the int3, as on hardware.
                var events = vcpu.GetVcpuEvents();
                events.ExceptionInjected = 1;
                events.ExceptionNr = BreakpointVector;
                events.ExceptionHasErrorCode = 0;
                events.ExceptionPending = 0;
                vcpu.SetVcpuEvents(events);
                return true;
            case Code.Wait:
                // fwait only raises #MF when an unmasked x87 exception is pending (FSW.ES); otherwise it does nothing.
                if ((vcpu.GetFpu().Fsw & FpuStatusErrorSummary) != 0) return false;
                AdvanceRip(vcpu, instruction.Length);
                return true;
            default:
                return false;
        }
    }

    private static void AdvanceRip(KvmVcpu vcpu, int length)
    {
        var regs = vcpu.GetRegs();
        regs.Rip += (ulong)length;
        vcpu.SetRegs(regs);
    }
}
