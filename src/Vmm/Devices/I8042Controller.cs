using Vmm.Serialization;

namespace Vmm.Devices;

/// <summary>The PC keyboard controller at ports 0x60/0x64, with a PS/2 keyboard behind it that answers
/// commands (no keys are ever typed: console input goes through the serial port). It is enough for
/// Linux's i8042 and atkbd probes to finish at once instead of timing out, and its reset command
/// (0xFE, what <c>reboot=k</c> uses) ends the VM. There is no AUX (mouse) port: commands for it get no
/// answer, as on a controller without one (vmm's default command line says i8042.noaux).</summary>
public sealed class I8042Controller(IMachineStop machine, IInterruptLine keyboardInterrupt) : IBusDevice, IStatefulDevice
{
    public const ushort DataPort = 0x60;
    public const ushort CommandPort = 0x64;
    public const uint KeyboardIrq = 1;

    // Controller commands (drivers/input/serio/i8042.h).
    private const byte CmdReadConfig = 0x20, CmdWriteConfig = 0x60, CmdDisableAux = 0xa7, CmdEnableAux = 0xa8;
    private const byte CmdSelfTest = 0xaa, CmdKeyboardTest = 0xab, CmdDisableKeyboard = 0xad, CmdEnableKeyboard = 0xae;
    private const byte CmdReadOutputPort = 0xd0, CmdWriteOutputPort = 0xd1, CmdWriteKeyboardOutput = 0xd2;
    private const byte CmdPulseReset = 0xfe;

    private const byte StatusOutputFull = 0x01, StatusSystemFlag = 0x04, StatusLastWasCommand = 0x08, StatusNotInhibited = 0x10;
    private const byte ConfigKeyboardInterrupt = 0x01, ConfigSystemFlag = 0x04, ConfigDisableKeyboard = 0x10, ConfigDisableAux = 0x20;
    private const byte ConfigTranslate = 0x40;

    // Keyboard commands and replies.
    private const byte KbdAck = 0xfa, KbdSelfTestPassed = 0xaa;
    private const byte KbdSetLeds = 0xed, KbdSetScancodeSet = 0xf0, KbdGetId = 0xf2, KbdSetRate = 0xf3, KbdReset = 0xff;

    private readonly object _lock = new();
    private readonly Queue<byte> _output = new();
    private byte _config = ConfigKeyboardInterrupt | ConfigSystemFlag | ConfigDisableAux | ConfigTranslate;
    // Not inhibited: without it Linux warns "Keylock active".
    private byte _status = StatusSystemFlag | StatusNotInhibited;
    private byte _pendingControllerCommand;
    private byte _pendingKeyboardCommand;
    private byte _outputPort = 0x01; // bit 0: the CPU's reset line, active low

    public void Read(ulong offset, Span<byte> data)
    {
        if (data.Length == 0) return;
        bool trigger = false;
        lock (_lock)
        {
            if (offset == CommandPort - DataPort)
            {
                data[0] = (byte)(_status | (_output.Count > 0 ? StatusOutputFull : 0));
            }
            else
            {
                data[0] = _output.Count > 0 ? _output.Dequeue() : (byte)0;
                trigger = _output.Count > 0 && KeyboardInterruptEnabled;
            }
            data[1..].Clear();
        }
        if (trigger) keyboardInterrupt.Trigger();
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.Length == 0) return;
        bool trigger;
        lock (_lock)
        {
            int queuedBefore = _output.Count;
            if (offset == CommandPort - DataPort) WriteCommand(data[0]);
            else WriteData(data[0]);
            trigger = queuedBefore == 0 && _output.Count > 0 && KeyboardInterruptEnabled;
        }
        if (trigger) keyboardInterrupt.Trigger();
    }

    public string StateName => "i8042";

    public void SaveState(StateWriter writer) => SaveState().Write(writer);

    public void RestoreState(StateReader reader) => RestoreState(I8042State.Read(reader));

    public I8042State SaveState()
    {
        lock (_lock) return new I8042State(_config, _status, _pendingControllerCommand, _pendingKeyboardCommand, _outputPort, _output.ToArray());
    }

    public void RestoreState(I8042State state)
    {
        lock (_lock)
        {
            (_config, _status, _outputPort) = (state.Config, state.Status, state.OutputPort);
            (_pendingControllerCommand, _pendingKeyboardCommand) = (state.PendingControllerCommand, state.PendingKeyboardCommand);
            _output.Clear();
            foreach (byte b in state.Output) Emit(b);
        }
    }

    /// <summary>Queues a byte for the guest to read. A guest that sends commands and never reads the
    /// answers would grow the queue without end; like a real controller's buffer it holds a bounded amount.</summary>
    private void Emit(byte value)
    {
        if (_output.Count < I8042State.MaxOutputBytes) _output.Enqueue(value);
    }

    private bool KeyboardInterruptEnabled => (_config & ConfigKeyboardInterrupt) != 0;

    private void WriteCommand(byte command)
    {
        _status |= StatusLastWasCommand;
        _pendingControllerCommand = 0;
        switch (command)
        {
            case CmdReadConfig: Emit(_config); break;
            case CmdWriteConfig or CmdWriteOutputPort or CmdWriteKeyboardOutput: _pendingControllerCommand = command; break;
            case CmdDisableAux: _config |= ConfigDisableAux; break;
            case CmdEnableAux: _config &= unchecked((byte)~ConfigDisableAux); break;
            case CmdSelfTest: Emit(0x55); break;
            case CmdKeyboardTest: Emit(0x00); break;
            case CmdDisableKeyboard: _config |= ConfigDisableKeyboard; break;
            case CmdEnableKeyboard: _config &= unchecked((byte)~ConfigDisableKeyboard); break;
            case CmdReadOutputPort: Emit(_outputPort); break;
            case CmdPulseReset: machine.RequestGuestReset("i8042 reset command 0xfe"); break;
        }
    }

    private void WriteData(byte value)
    {
        _status &= unchecked((byte)~StatusLastWasCommand);
        byte controllerCommand = _pendingControllerCommand;
        _pendingControllerCommand = 0;
        switch (controllerCommand)
        {
            case CmdWriteConfig:
                _config = value;
                return;
            case CmdWriteOutputPort:
                _outputPort = value;
                if ((value & 0x01) == 0) machine.RequestGuestReset("i8042 output port reset line");
                return;
            case CmdWriteKeyboardOutput:
                Emit(value);
                return;
        }
        WriteToKeyboard(value);
    }

    /// <summary>The PS/2 keyboard's side: every byte is acknowledged; the few commands with replies get them.</summary>
    private void WriteToKeyboard(byte value)
    {
        if (_pendingKeyboardCommand != 0)
        {
            // The parameter byte of set-LEDs, set-rate or scancode-set.
            byte command = _pendingKeyboardCommand;
            _pendingKeyboardCommand = 0;
            Emit(KbdAck);
            if (command == KbdSetScancodeSet && value == 0) Emit(0x02);
            return;
        }
        Emit(KbdAck);
        switch (value)
        {
            case KbdSetLeds or KbdSetRate or KbdSetScancodeSet: _pendingKeyboardCommand = value; break;
            case KbdGetId: Emit(0xab); Emit(0x83); break; // MF2 keyboard
            case KbdReset: Emit(KbdSelfTestPassed); break;
        }
    }
}
