using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Vmm.Firmware;

/// <summary>Tiny guests, assembled with Iced when a test asks for them (no binaries are checked in).
/// Each is 64-bit code entered through the Linux 64-bit boot protocol at <see cref="FirmwareImage.LoadAddress"/>.</summary>
public static class FirmwareGuests
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
