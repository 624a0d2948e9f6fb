using System.Runtime.InteropServices;
using Vmm.Vm;

namespace Vmm.Cli;

/// <summary>Feeds standard input to the guest's serial port. On a terminal it switches to raw mode (so
/// keys, Ctrl-C included, go to the guest) and restores the terminal when disposed; Ctrl-A x quits vmm,
/// Ctrl-A Ctrl-A sends a Ctrl-A. Piped input is forwarded as is; nothing is read when stdin is closed.</summary>
public sealed unsafe partial class TerminalInput : IDisposable
{
    private const int StdinFd = 0;
    private const byte CtrlA = 0x01;
    private const int TermiosBytes = 60;
    private const int TcsaNow = 0;
    private const int OutputFlagsOffset = 4;
    private const uint OPost = 0x1, ONlcr = 0x4;

    private readonly Machine _machine;
    private readonly byte[]? _savedTermios;
    private readonly CancellationTokenSource _stop = new();
    private int _disposed;

    private TerminalInput(Machine machine, byte[]? savedTermios)
    {
        _machine = machine;
        _savedTermios = savedTermios;
        new Thread(Pump) { Name = "serial-input", IsBackground = true }.Start();
    }

    public static TerminalInput Start(Machine machine)
    {
        byte[]? saved = null;
        if (IsATty(StdinFd) == 1)
        {
            saved = new byte[TermiosBytes + 4];
            byte[] raw = new byte[TermiosBytes + 4];
            fixed (byte* s = saved, r = raw)
            {
                if (TcGetAttr(StdinFd, s) == 0)
                {
                    Buffer.MemoryCopy(s, r, raw.Length, saved.Length);
                    CfMakeRaw(r);
                    // Keep newline translation for vmm's own messages on the same terminal.
                    *(uint*)(r + OutputFlagsOffset) |= OPost | ONlcr;
                    TcSetAttr(StdinFd, TcsaNow, r);
                }
                else
                {
                    saved = null;
                }
            }
        }
        return new TerminalInput(machine, saved);
    }

    /// <summary>The input thread is a failure boundary of its own: if it fails, the guest gets no more input
    /// and says so, and the VM runs on.</summary>
    private void Pump()
    {
        try
        {
            Forward();
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"vmm: warning: console input stopped: {(e is VmmException ? e.Message : $"internal error in vmm: {e}")}");
        }
    }

    private void Forward()
    {
        byte[] buffer = new byte[256];
        bool escape = false;
        var forward = new List<byte>(256);
        while (!_stop.IsCancellationRequested)
        {
            nint read;
            fixed (byte* p = buffer) read = Read(StdinFd, p, (nuint)buffer.Length);
            if (read < 0 && Marshal.GetLastPInvokeError() == 4 /* EINTR */) continue;
            if (read <= 0) return;
            forward.Clear();
            for (int i = 0; i < read; i++)
            {
                byte b = buffer[i];
                if (_savedTermios is null) { forward.Add(b); continue; }
                if (escape)
                {
                    escape = false;
                    if (b is (byte)'x' or (byte)'X')
                    {
                        _machine.RequestStop(new VmStop(VmStopKind.UserQuit, ExitCodes.GuestFinished, "quit from the terminal (Ctrl-A x)"));
                        return;
                    }
                    if (b == CtrlA) forward.Add(CtrlA);
                    continue;
                }
                if (b == CtrlA) escape = true; else forward.Add(b);
            }
            if (!_machine.Serial.Receive(forward.ToArray(), _stop.Token)) return;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stop.Cancel();
        if (_savedTermios is not null)
            fixed (byte* s = _savedTermios) TcSetAttr(StdinFd, TcsaNow, s);
    }

    [LibraryImport("libc", EntryPoint = "isatty")]
    private static partial int IsATty(int fd);

    [LibraryImport("libc", EntryPoint = "tcgetattr", SetLastError = true)]
    private static partial int TcGetAttr(int fd, byte* termios);

    [LibraryImport("libc", EntryPoint = "tcsetattr", SetLastError = true)]
    private static partial int TcSetAttr(int fd, int optionalActions, byte* termios);

    [LibraryImport("libc", EntryPoint = "cfmakeraw")]
    private static partial void CfMakeRaw(byte* termios);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(int fd, byte* buffer, nuint count);
}
