using System.Text;
using Iced.Intel;
using Vmm.Kvm;
using Vmm.Kvm.Interop;
using Vmm.Memory;

namespace Vmm.Vm;

/// <summary>What a person needs to understand a guest that stopped badly: why, the registers, and the
/// instruction at RIP disassembled.</summary>
public static class FaultReport
{
    private const ulong EferLma = 1 << 10;

    public static string Build(string reason, KvmVcpu vcpu, GuestMemory memory, ReadOnlySpan<byte> instructionBytes = default)
    {
        var text = new StringBuilder();
        text.AppendLine($"{reason} on vCPU {vcpu.Index}");
        KvmRegs regs;
        KvmSregs sregs;
        try
        {
            regs = vcpu.GetRegs();
            sregs = vcpu.GetSregs();
        }
        catch (KvmException e)
        {
            text.AppendLine($"  (registers unavailable: {e.Message})");
            return text.ToString().TrimEnd();
        }
        AppendRegisters(text, regs, sregs);
        int bitness = Bitness(sregs);
        ulong linearRip = bitness == 64 ? regs.Rip : sregs.Cs.Base + regs.Rip;
        byte[] code = instructionBytes.IsEmpty ? ReadCode(vcpu, memory, linearRip) : instructionBytes.ToArray();
        text.Append($"  code at rip (linear 0x{linearRip:x}, {bitness}-bit): ");
        text.AppendLine(code.Length == 0 ? "(not readable: RIP is not mapped to guest RAM)" : Disassemble(code, bitness, regs.Rip));
        return text.ToString().TrimEnd();
    }

    public static int Bitness(in KvmSregs sregs) =>
        (sregs.Efer & EferLma) != 0 && sregs.Cs.L != 0 ? 64 : sregs.Cs.Db != 0 ? 32 : 16;

    /// <summary>Decodes the first instruction in <paramref name="code"/>: "bytes  mnemonic operands".</summary>
    public static string Disassemble(ReadOnlySpan<byte> code, int bitness, ulong ip)
    {
        var decoder = Iced.Intel.Decoder.Create(bitness, new ByteArrayCodeReader(code.ToArray()));
        decoder.IP = ip;
        decoder.Decode(out var instruction);
        string bytes = Convert.ToHexString(code[..Math.Max(1, Math.Min(instruction.Length, code.Length))]).ToLowerInvariant();
        if (instruction.IsInvalid) return $"{Spaced(Convert.ToHexString(code).ToLowerInvariant())}  (not a valid instruction)";
        var formatter = new IntelFormatter();
        var output = new StringOutput();
        formatter.Format(instruction, output);
        return $"{Spaced(bytes)}  {output.ToStringAndReset()}";
    }

    /// <summary>The bytes at a linear address, following the guest's page tables, up to 15 (an x86 maximum).</summary>
    public static byte[] ReadCode(KvmVcpu vcpu, GuestMemory memory, ulong linearAddress)
    {
        var bytes = new List<byte>(15);
        while (bytes.Count < 15)
        {
            ulong linear = linearAddress + (ulong)bytes.Count;
            ulong? physical;
            try { physical = vcpu.Translate(linear); }
            catch (KvmException) { break; }
            if (physical is null) break;
            int inPage = (int)Math.Min((ulong)(15 - bytes.Count), 4096 - (linear & 4095));
            if (!memory.IsRam(physical.Value, (ulong)inPage)) break;
            bytes.AddRange(memory.GetSpan(physical.Value, inPage));
        }
        return bytes.ToArray();
    }

    private static void AppendRegisters(StringBuilder text, in KvmRegs r, in KvmSregs s)
    {
        text.AppendLine($"  rip {r.Rip:x16}  rsp {r.Rsp:x16}  rflags {r.Rflags:x8}");
        text.AppendLine($"  rax {r.Rax:x16}  rbx {r.Rbx:x16}  rcx {r.Rcx:x16}  rdx {r.Rdx:x16}");
        text.AppendLine($"  rsi {r.Rsi:x16}  rdi {r.Rdi:x16}  rbp {r.Rbp:x16}  r8  {r.R8:x16}");
        text.AppendLine($"  r9  {r.R9:x16}  r10 {r.R10:x16}  r11 {r.R11:x16}  r12 {r.R12:x16}");
        text.AppendLine($"  r13 {r.R13:x16}  r14 {r.R14:x16}  r15 {r.R15:x16}");
        text.AppendLine($"  cr0 {s.Cr0:x16}  cr2 {s.Cr2:x16}  cr3 {s.Cr3:x16}  cr4 {s.Cr4:x16}  efer {s.Efer:x}");
        text.AppendLine($"  cs {s.Cs.Selector:x4} (base {s.Cs.Base:x}, l={s.Cs.L} db={s.Cs.Db})  ss {s.Ss.Selector:x4}  ds {s.Ds.Selector:x4}  tr {s.Tr.Selector:x4}  gdt {s.Gdt.Base:x}/{s.Gdt.Limit:x}  idt {s.Idt.Base:x}/{s.Idt.Limit:x}");
    }

    private static string Spaced(string hex) =>
        string.Join(' ', Enumerable.Range(0, hex.Length / 2).Select(i => hex.Substring(i * 2, 2)));
}
