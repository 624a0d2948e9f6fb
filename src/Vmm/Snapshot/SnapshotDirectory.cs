using Vmm.State;
using Vmm.Vm;

namespace Vmm.Snapshot;

/// <summary>A snapshot on disk: <c>state.bin</c> (the versioned <see cref="MachineState"/>) and
/// <c>memory.bin</c> (guest RAM, see <see cref="MemoryImage"/>). Both are written under temporary names
/// and renamed at the end, so a directory never holds half a snapshot that looks complete.</summary>
public static class SnapshotDirectory
{
    public const string StateFileName = "state.bin";
    public const string MemoryFileName = "memory.bin";
    private const int MaxStateBytes = 64 << 20;

    /// <summary>Writes the paused machine's state and RAM to <paramref name="directory"/> (created if needed).</summary>
    public static void Write(Machine machine, string directory)
    {
        Directory.CreateDirectory(directory);
        MachineState state = machine.SaveState();
        machine.FlushDisks();
        string statePath = Path.Combine(directory, StateFileName), memoryPath = Path.Combine(directory, MemoryFileName);
        string stateTemp = statePath + ".partial", memoryTemp = memoryPath + ".partial";
        try
        {
            MemoryImage.Write(machine.Memory, memoryTemp);
            using (var file = new FileStream(stateTemp, FileMode.Create, FileAccess.Write))
            {
                file.Write(state.ToBytes());
                file.Flush(flushToDisk: true);
            }
            File.Move(memoryTemp, memoryPath, overwrite: true);
            File.Move(stateTemp, statePath, overwrite: true);
        }
        finally
        {
            File.Delete(stateTemp);
            File.Delete(memoryTemp);
        }
    }

    /// <summary>Reads and checks a snapshot's state; returns it with the path of its memory image.</summary>
    public static (MachineState State, string MemoryPath) Read(string directory)
    {
        string statePath = Path.Combine(directory, StateFileName), memoryPath = Path.Combine(directory, MemoryFileName);
        if (!File.Exists(statePath) || !File.Exists(memoryPath))
            throw new StateFormatException($"{directory} is not a vmm snapshot (it needs {StateFileName} and {MemoryFileName})");
        long length = new FileInfo(statePath).Length;
        if (length > MaxStateBytes) throw new StateFormatException($"{statePath}: {length} bytes is too large for a VM state");
        return (MachineState.FromBytes(File.ReadAllBytes(statePath)), memoryPath);
    }
}
