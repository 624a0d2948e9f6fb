using Vmm.Serialization;
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

    /// <summary>Writes the paused machine's state and RAM to <paramref name="directory"/> (created if needed).
    /// RAM stays mapped for the whole write even if the VM ends meanwhile.</summary>
    public static void Write(Machine machine, string directory)
    {
        using var ram = machine.Memory.Lease();
        MachineState state = MachinePersistence.Save(machine);
        MachinePersistence.FlushDevices(machine);
        string statePath = Path.Combine(directory, StateFileName), memoryPath = Path.Combine(directory, MemoryFileName);
        string stateTemp = statePath + ".partial", memoryTemp = memoryPath + ".partial";
        try
        {
            Directory.CreateDirectory(directory);
            MemoryImage.Write(machine.Memory, memoryTemp);
            using (var file = new FileStream(stateTemp, FileMode.Create, FileAccess.Write))
            {
                file.Write(state.ToBytes());
                file.Flush(flushToDisk: true);
            }
            File.Move(memoryTemp, memoryPath, overwrite: true);
            File.Move(stateTemp, statePath, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException($"cannot write the snapshot to {directory}: {e.Message}", e);
        }
        finally
        {
            TryDelete(stateTemp);
            TryDelete(memoryTemp);
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A leftover ".partial" never looks like a snapshot; the write's own error is what matters.
        }
    }

    /// <summary>Reads and checks a snapshot's state; returns it with the path of its memory image.</summary>
    public static (MachineState State, string MemoryPath) Read(string directory)
    {
        string statePath = Path.Combine(directory, StateFileName), memoryPath = Path.Combine(directory, MemoryFileName);
        if (!File.Exists(statePath) || !File.Exists(memoryPath))
            throw new SnapshotException($"{directory} is not a vmm snapshot (it needs {StateFileName} and {MemoryFileName})");
        try
        {
            long length = new FileInfo(statePath).Length;
            if (length > MaxStateBytes) throw new StateFormatException($"{statePath}: {length} bytes is too large for a VM state");
            return (MachineState.FromBytes(File.ReadAllBytes(statePath)), memoryPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException($"cannot read the snapshot in {directory}: {e.Message}", e);
        }
    }
}
