using System.Diagnostics;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Migration;
using Vmm.State;
using Vmm.Vm;

namespace Vmm.Replication;

/// <summary>What a standby holds of a replicated VM: its RAM (filled in place, changed only by whole committed
/// epochs), its disk images (in the standby's disk directory, under the primary's file names once the first
/// epoch commits), and the device and vCPU state of the last committed epoch. <see cref="Resume"/> turns it into a
/// machine ready to run; until then nothing of it runs.</summary>
public sealed class StandbyCheckpoint : IDisposable
{
    private GuestMemory? _memory;
    private readonly IncomingDiskImages _disks;
    private MachineState? _state;
    private long _committedTicks;

    internal StandbyCheckpoint(string name, MachineDescription description, GuestMemory memory, IncomingDiskImages disks)
    {
        Name = name;
        Description = description;
        _memory = memory;
        _disks = disks;
    }

    public string Name { get; }
    /// <summary>The VM as the primary described it, its disks at their paths here.</summary>
    public MachineDescription Description { get; }
    internal GuestMemory Memory => _memory ?? throw new ObjectDisposedException(nameof(StandbyCheckpoint));
    internal IncomingDiskImages Disks => _disks;

    /// <summary>The last epoch committed here; 0 while none is (and then there is nothing to resume).</summary>
    public long Epoch { get; private set; }

    /// <summary>How long ago the last epoch was committed here.</summary>
    public TimeSpan Age => Epoch == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(Interlocked.Read(ref _committedTicks));

    internal void Commit(long epoch, MachineState state)
    {
        _state = state;
        Epoch = epoch;
        Interlocked.Exchange(ref _committedTicks, Stopwatch.GetTimestamp());
    }

    /// <summary>Builds the VM from the last committed epoch (RAM as it is, that epoch's state, the disk images) with
    /// this host's <paramref name="hostSettings"/>; the caller runs it. The checkpoint is used up either way.</summary>
    public Machine Resume(MachineConfig hostSettings, Logger log)
    {
        if (_state is not { } state || _memory is not { } memory) throw new ReplicationException("no epoch was committed here: there is nothing to resume");
        _memory = null;
        var machine = MachineBuilder.ForRestore(Description.ToConfig(hostSettings), log, memory);
        try
        {
            MachinePersistence.Restore(machine, state);
            _disks.Keep();
            return machine;
        }
        catch
        {
            machine.Dispose();
            throw;
        }
    }

    /// <summary>Releases the RAM but leaves the disk images at their paths, as the last committed epoch left them: for a
    /// standby that stops while this may be the only current copy of the VM (its primary lost, or handed over), so
    /// that its disks at least survive, consistent as of that epoch.</summary>
    public void ReleaseKeepingDisks()
    {
        if (Epoch > 0) _disks.Keep();
        Dispose();
    }

    /// <summary>Releases the RAM; the disk images go too unless the VM was resumed on them.</summary>
    public void Dispose()
    {
        _memory?.Dispose();
        _memory = null;
        _disks.Dispose();
    }
}
