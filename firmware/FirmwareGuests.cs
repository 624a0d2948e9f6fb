using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Vmm.Firmware;

/// <summary>Tiny guests, assembled with Iced when a test asks for them (no binaries are checked in).
/// Each is 64-bit code entered through the Linux 64-bit boot protocol at <see cref="FirmwareImage.LoadAddress"/>.</summary>
public static partial class FirmwareGuests
{
    public const ushort SerialPort = 0x3f8;
    public const ushort KeyboardCommandPort = 0x64;
    public const ushort ExitPort = 0x501;
    public const ushort BootTimerPort = 0x440;
    /// <summary>An address in the 32-bit MMIO hole where vmm places no device.</summary>
    public const uint UnclaimedMmioAddress = 0xd800_0000;
    public const byte ExitValueSuccess = 0x10, ExitValueFailure = 0x11;

    /// <summary>Prints <paramref name="message"/> on COM1, then resets through the keyboard controller.</summary>
    public static byte[] PrintThenReset(string message)
    {
        var a = new Assembler(64);
        EmitPrint(a, message);
        a.mov(al, 0xfe);
        a.@out((byte)KeyboardCommandPort, al);
        EmitHang(a);
        return Assemble(a);
    }

    /// <summary>Marks the boot timer, then ends the VM through the exit port with <paramref name="value"/>.</summary>
    public static byte[] BootTimerThenExit(byte value)
    {
        var a = new Assembler(64);
        a.mov(al, 1);
        a.mov(dx, BootTimerPort);
        a.@out(dx, al);
        EmitExit(a, value);
        return Assemble(a);
    }

    /// <summary>Writes <paramref name="data"/> to <paramref name="port"/> (a device the test placed there), then ends
    /// the VM through the exit port with <paramref name="exitValue"/>.</summary>
    public static byte[] WritePortThenExit(ushort port, byte data, byte exitValue)
    {
        var a = new Assembler(64);
        a.mov(al, data);
        a.mov(dx, port);
        a.@out(dx, al);
        EmitExit(a, exitValue);
        return Assemble(a);
    }

    /// <summary>Writes <paramref name="data"/> to <paramref name="port"/>, then increments the counter at
    /// <see cref="CounterAddress"/> forever, as <see cref="CountForever"/>.</summary>
    public static byte[] WritePortThenCountForever(ushort port, byte data)
    {
        var a = new Assembler(64);
        var loop = a.CreateLabel();
        a.mov(al, data);
        a.mov(dx, port);
        a.@out(dx, al);
        a.mov(edi, (uint)CounterAddress);
        a.Label(ref loop);
        a.inc(__qword_ptr[rdi]);
        a.jmp(loop);
        return Assemble(a);
    }

    /// <summary>Executes ud2 with an IDT that has no usable entry: #UD, then #GP, then #DF, then a triple fault.</summary>
    public static byte[] TripleFault()
    {
        var a = new Assembler(64);
        a.ud2();
        return Assemble(a);
    }

    /// <summary>Reads an MMIO address and a port nobody claims; both must read as all ones. Reports through
    /// the exit port: <see cref="ExitValueSuccess"/> or <see cref="ExitValueFailure"/>. Also writes both,
    /// which vmm must ignore.</summary>
    public static byte[] ProbeUnclaimedMmioAndPort()
    {
        var a = new Assembler(64);
        var fail = a.CreateLabel();
        a.mov(edi, UnclaimedMmioAddress);
        a.mov(__dword_ptr[rdi], 0x1234_5678);
        a.mov(eax, __dword_ptr[rdi]);
        a.cmp(eax, -1);
        a.jne(fail);
        a.mov(dx, 0x2f8 + 7); // COM2's scratch register: there is no COM2
        a.mov(al, 0x5a);
        a.@out(dx, al);
        a.@in(al, dx);
        a.cmp(al, 0xff);
        a.jne(fail);
        EmitExit(a, ExitValueSuccess);
        a.Label(ref fail);
        EmitExit(a, ExitValueFailure);
        return Assemble(a);
    }

    /// <summary>Jumps into the MMIO hole, where there is no RAM to fetch instructions from: KVM cannot run
    /// or emulate that, and stops with an internal error that vmm must report.</summary>
    public static byte[] JumpOutsideRam()
    {
        var a = new Assembler(64);
        a.mov(eax, UnclaimedMmioAddress);
        a.jmp(rax);
        return Assemble(a);
    }

    /// <summary>Runs popcnt on an MMIO address: KVM must emulate the access and its emulator has no popcnt,
    /// so this is an emulation failure on every host (hardware or nested), with a known instruction at RIP.</summary>
    public static byte[] PopcntOnMmio()
    {
        var a = new Assembler(64);
        a.mov(edi, UnclaimedMmioAddress);
        a.popcnt(rax, __qword_ptr[rdi]);
        EmitExit(a, ExitValueFailure);
        return Assemble(a);
    }

    /// <summary>Installs a #BP handler that exits with <paramref name="handlerExitValue"/>, then executes int3.
    /// Hardware delivers #BP itself; on the nested backend vmm completes the int3 the emulator rejects.</summary>
    public static byte[] BreakpointHandledByGuest(byte handlerExitValue)
    {
        const uint IdtAddress = 0x200000, IdtrAddress = 0x201000;
        var a = new Assembler(64);
        var handler = a.CreateLabel();
        // Interrupt gate for vector 3: offset split over both qwords, selector 0x10, type 0x8e (present, 64-bit interrupt gate).
        a.lea(rax, __[handler]);
        a.mov(rbx, rax);
        a.and(eax, 0xffff);
        a.mov(rcx, rbx);
        a.shr(rcx, 16);
        a.and(ecx, 0xffff);
        a.shl(rcx, 48);
        a.or(rax, rcx);
        a.mov(rcx, 0x0000_8e00_0010_0000L);
        a.or(rax, rcx);
        a.mov(edi, IdtAddress);
        a.mov(__qword_ptr[rdi + 3 * 16], rax);
        a.shr(rbx, 32);
        a.mov(__qword_ptr[rdi + 3 * 16 + 8], rbx);
        a.mov(esi, IdtrAddress);
        a.mov(__word_ptr[rsi], 16 * 256 - 1);
        a.mov(__qword_ptr[rsi + 2], rdi);
        a.lidt(__[rsi]);
        a.int3();
        EmitExit(a, ExitValueFailure);
        a.Label(ref handler);
        EmitExit(a, handlerExitValue);
        return Assemble(a);
    }

    /// <summary>fninit then fwait (no x87 exception pending), then exits with <paramref name="value"/>.</summary>
    public static byte[] FwaitThenExit(byte value)
    {
        var a = new Assembler(64);
        a.fninit();
        a.wait();
        EmitExit(a, value);
        return Assemble(a);
    }

    /// <summary>Echoes <paramref name="count"/> bytes received on COM1 (polling LSR's data-ready bit) back
    /// to COM1, then exits with <see cref="ExitValueSuccess"/>.</summary>
    public static byte[] EchoSerialInput(int count)
    {
        var a = new Assembler(64);
        var wait = a.CreateLabel();
        a.mov(ecx, count);
        a.Label(ref wait);
        a.mov(dx, SerialPort + 5);
        a.@in(al, dx);
        a.test(al, 1);
        a.jz(wait);
        a.mov(dx, SerialPort);
        a.@in(al, dx);
        a.@out(dx, al);
        a.dec(ecx);
        a.jnz(wait);
        EmitExit(a, ExitValueSuccess);
        return Assemble(a);
    }

    /// <summary>Where <see cref="CountForever"/> keeps its counter, and <see cref="DirtyMemoryWithChecksum"/> its
    /// count of dirtying writes.</summary>
    public const ulong CounterAddress = 0x300000;

    /// <summary>Increments a 64-bit counter at <see cref="CounterAddress"/> forever: the host sees whether
    /// the guest runs (pause, resume, migration) by reading it.</summary>
    public static byte[] CountForever()
    {
        var a = new Assembler(64);
        var loop = a.CreateLabel();
        a.mov(edi, (uint)CounterAddress);
        a.Label(ref loop);
        a.inc(__qword_ptr[rdi]);
        a.jmp(loop);
        return Assemble(a);
    }

    /// <summary>Spins forever without exiting to the VMM: only a stop from the host ends it.</summary>
    public static byte[] SpinForever()
    {
        var a = new Assembler(64);
        var spin = a.CreateLabel();
        a.Label(ref spin);
        a.pause();
        a.jmp(spin);
        return Assemble(a);
    }

    private static void EmitPrint(Assembler a, string message)
    {
        a.mov(dx, SerialPort);
        foreach (char c in message)
        {
            a.mov(al, (byte)c);
            a.@out(dx, al);
        }
    }

    private static void EmitExit(Assembler a, byte value)
    {
        a.mov(al, value);
        a.mov(dx, ExitPort);
        a.@out(dx, al);
        EmitHang(a);
    }

    private static void EmitHang(Assembler a)
    {
        var hang = a.CreateLabel();
        a.Label(ref hang);
        a.hlt();
        a.jmp(hang);
    }

    private static byte[] Assemble(Assembler a)
    {
        using var stream = new MemoryStream();
        a.Assemble(new StreamCodeWriter(stream), FirmwareImage.LoadAddress);
        return FirmwareImage.ToElf(stream.ToArray());
    }
}
