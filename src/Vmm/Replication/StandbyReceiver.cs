using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Vmm.Arch;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Migration;
using Vmm.Serialization;
using Vmm.State;
using Vmm.Vm;

namespace Vmm.Replication;

/// <summary>The standby side of one replication stream: the first full copy goes straight into the RAM and disk
/// images it holds; after it, each epoch's pages, disk blocks and state are checked as they arrive and kept aside,
/// and applied only when the epoch's end arrives, so what it holds is always one whole committed epoch, RAM and disks
/// alike. Then it says so and the primary releases that epoch's output. Everything read is hostile input: a frame
/// that does not check out ends the stream with an error told to the primary (which then knows this standby will
/// not take over), never a half-applied epoch. A Handover right after a commit makes that epoch the VM's last: the
/// standby echoes it and, once the primary closes the stream, holds a checkpoint handed over on purpose.</summary>
/// <param name="fenceTimeout">How long this standby's fence command may run (zero: none); the primary holds the
/// guest's output that long beyond the failover timeout once it loses this standby.</param>
public sealed class StandbyReceiver(MigrationChannel channel, Logger log, string diskDirectory, TimeSpan failoverTimeout, TimeSpan fenceTimeout)
{
    private byte[] _buffer = new byte[1 << 20];
    private readonly List<(MigrationFrameType Type, byte[] Payload)> _epoch = [];
    private long _epochBytes;
    /// <summary>The passes of the first copy taken so far: the full one, then catch-up passes before the first epoch.</summary>
    private int _passes = 1;
    private long _lastHeardTicks = Stopwatch.GetTimestamp();
    private long _lastAnsweredTicks = Stopwatch.GetTimestamp(), _answerHeardTicks = Stopwatch.GetTimestamp();

    /// <summary>The VM being replicated here, once its Hello was accepted.</summary>
    public StandbyCheckpoint? Checkpoint { get; private set; }

    /// <summary>When the primary was last heard from.</summary>
    public TimeSpan SinceHeard => Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastHeardTicks));

    /// <summary>Since the last answer of this standby that the primary surely heard: one it sent a further frame after
    /// (the primary asks one thing at a time: a pass, an epoch, a heartbeat, and sends nothing more until it has the
    /// answer). The primary last heard from this standby no earlier than that, so its hold of the guest's output after
    /// losing it ends no earlier than that plus twice the failover timeout and the fence timeout. An answer sent into a
    /// link the primary had given up on (this standby stopped or starved meanwhile) does not count.</summary>
    public TimeSpan SinceAnswerHeard => Stopwatch.GetElapsedTime(Interlocked.Read(ref _answerHeardTicks));

    /// <summary>Receives until the stream ends. <paramref name="admit"/> refuses a VM this host will not hold (a name
    /// in use, a CPUID its KVM cannot offer) by throwing.</summary>
    public StandbyOutcome Run(Action<MigrationHello> admit)
    {
        try
        {
            var hello = MigrationReceiver.ReadHello(channel, ref _buffer);
            if (!hello.Replication) throw new MigrationException("this is a standby, and the source migrates its VM (migrations go to 'vmm migrate-receive')");
            if (hello.CopiedDiskBytes is not { } diskBytes) throw new MigrationException("migration stream: a replication Hello without its disk images");
            admit(hello);
            Checkpoint = Hold(hello, diskBytes);
            Answer(MigrationFrameType.Ready, [.. BitConverter.GetBytes((int)failoverTimeout.TotalMilliseconds), .. BitConverter.GetBytes((int)fenceTimeout.TotalMilliseconds)]);
            log.Info($"standby: replicating VM {hello.Name} ({hello.Description.MemoryBytes >> 20} MiB, {hello.Description.Disks.Count} disks)");
            ReceiveFirstCopy();
            long epoch = ReceiveEpochs(hello);
            ConfirmHandover(epoch);
            return new StandbyOutcome(Checkpoint, $"the primary handed the VM over at epoch {epoch}", HandedOver: true);
        }
        catch (ReplicaStorageException e)
        {
            // Not a lost connection: the primary is there, and must know at once that this copy is gone. Whatever of the
            // epoch was applied is applied, so what is held is no checkpoint at all (RAM and disks of different epochs).
            log.Error($"standby: {e.Message}; the replica is discarded");
            TryAnswer(MigrationFrameType.Error, $"the standby cannot keep the replica: {e.Message}");
            Discard();
            return new StandbyOutcome(null, $"the standby's storage failed: {e.Message}");
        }
        catch (PrimaryEndedException e)
        {
            Discard();
            // The primary releases the guest's held output once it hears that this copy is gone.
            TryAnswer(MigrationFrameType.Heartbeat, "");
            return new StandbyOutcome(null, $"the primary ended replication: {e.Message}");
        }
        catch (Exception e) when (MigrationChannel.IsConnectionLoss(e))
        {
            if (Checkpoint is not { Epoch: > 0 } checkpoint)
            {
                Discard();
                return new StandbyOutcome(null, $"the primary was lost before the first epoch committed ({e.Message}); nothing to resume");
            }
            return new StandbyOutcome(checkpoint, $"the primary was lost: {e.Message}");
        }
        catch (Exception e)
        {
            string why = e is VmmException ? e.Message : $"internal error in vmm: {e}";
            TryAnswer(MigrationFrameType.Error, e is VmmException ? e.Message : "internal error in vmm (see the standby's log)");
            Discard();
            return new StandbyOutcome(null, $"replication refused: {why}");
        }
    }

    private StandbyCheckpoint Hold(MigrationHello hello, IReadOnlyList<long> diskBytes)
    {
        // The replica's RAM, and an epoch kept aside until its end (every page of it, at worst): two copies of RAM.
        if (HostMemory.Refusal(2 * hello.Description.MemoryBytes, HostMemory.ReadMeminfo()) is { } refusal)
            throw new ConfigurationException($"a standby holds the VM's RAM and, while it arrives, an epoch of up to as much again: {refusal}");
        var disks = IncomingDiskImages.Create(diskDirectory, hello.Description.Disks, diskBytes);
        try
        {
            var description = hello.Description with { Disks = hello.Description.Disks.Select((d, i) => d with { Path = disks.FinalPaths[i] }).ToArray() };
            var memory = GuestMemory.Allocate(X86Layout.RamRanges(hello.Description.MemoryBytes));
            return new StandbyCheckpoint(hello.Name, description, memory, disks);
        }
        catch
        {
            disks.Dispose();
            throw;
        }
    }

    /// <summary>The first full copy: nothing is committed yet, so it goes straight into RAM and the images.</summary>
    private void ReceiveFirstCopy()
    {
        var checkpoint = Checkpoint!;
        while (true)
        {
            var (type, payload) = Receive();
            switch (type)
            {
                case MigrationFrameType.Pages:
                    PagesFrames.Check(checkpoint.Memory, payload.Span);
                    PagesFrames.Apply(checkpoint.Memory, payload.Span);
                    break;
                case MigrationFrameType.DiskData:
                    checkpoint.Disks.Check(type, payload.Span);
                    Store(() => checkpoint.Disks.WriteData(payload.Span));
                    break;
                case MigrationFrameType.DiskZero:
                    checkpoint.Disks.Check(type, payload.Span);
                    Store(() => checkpoint.Disks.WriteZero(payload.Span));
                    break;
                case MigrationFrameType.PassEnd when payload.Length == 4 && BinaryPrimitives.ReadInt32LittleEndian(payload.Span) == 1:
                    Answer(MigrationFrameType.PassDone, payload.Span);
                    log.Debug($"standby: first full copy received ({channel.BytesReceived >> 20} MiB)");
                    return;
                case MigrationFrameType.Abort:
                    throw new PrimaryEndedException(Encoding.UTF8.GetString(payload.Span));
                default:
                    throw new MigrationException($"migration stream: unexpected {type} frame in the first full copy");
            }
        }
    }

    /// <summary>Takes epochs until the primary hands the VM over (the epoch handed over) or the stream ends (an exception).</summary>
    private long ReceiveEpochs(MigrationHello hello)
    {
        var checkpoint = Checkpoint!;
        long maxEpochBytes = MaxEpochBytes(hello);
        MachineState? state = null;
        while (true)
        {
            var (type, payload) = Receive();
            switch (type)
            {
                case MigrationFrameType.Heartbeat:
                    Answer(MigrationFrameType.Heartbeat, []);
                    break;
                case MigrationFrameType.Pages:
                    PagesFrames.Check(checkpoint.Memory, payload.Span);
                    Keep(type, payload, maxEpochBytes);
                    break;
                case MigrationFrameType.DiskData or MigrationFrameType.DiskZero:
                    checkpoint.Disks.Check(type, payload.Span);
                    Keep(type, payload, maxEpochBytes);
                    break;
                case MigrationFrameType.State:
                    if (state is not null) throw new MigrationException("migration stream: two State frames in one epoch");
                    state = MachineState.FromBytes(payload.ToArray());
                    if (!state.Description.SameAs(hello.Description)) throw new StateFormatException("the epoch's state describes a different machine than the Hello did");
                    break;
                case MigrationFrameType.EpochEnd:
                    long epoch = payload.Length == 8 ? BinaryPrimitives.ReadInt64LittleEndian(payload.Span) : -1;
                    if (epoch != checkpoint.Epoch + 1) throw new MigrationException($"migration stream: epoch {epoch} ended after epoch {checkpoint.Epoch}");
                    if (state is null) throw new MigrationException($"migration stream: epoch {epoch} ended without its state");
                    Commit(epoch, state.WithDescription(checkpoint.Description));
                    state = null;
                    Answer(MigrationFrameType.EpochCommitted, payload.Span);
                    break;
                case MigrationFrameType.PassEnd:
                    // Before the first epoch, a catch-up pass of the first copy (what the guest changed while it ran):
                    // nothing is committed yet, so it goes straight in.
                    int pass = payload.Length == 4 ? BinaryPrimitives.ReadInt32LittleEndian(payload.Span) : -1;
                    if (checkpoint.Epoch != 0 || state is not null || pass != _passes + 1)
                        throw new MigrationException($"migration stream: pass {pass} ended {(checkpoint.Epoch != 0 ? $"after epoch {checkpoint.Epoch}" : $"after pass {_passes}")}");
                    ApplyKept();
                    _passes = pass;
                    Answer(MigrationFrameType.PassDone, payload.Span);
                    break;
                case MigrationFrameType.Abort:
                    throw new PrimaryEndedException(Encoding.UTF8.GetString(payload.Span));
                case MigrationFrameType.Handover:
                    // Only a whole committed epoch can be the VM's last: frames kept aside would be lost with it.
                    long handedOver = payload.Length == 8 ? BinaryPrimitives.ReadInt64LittleEndian(payload.Span) : -1;
                    if (checkpoint.Epoch == 0) throw new MigrationException("migration stream: a Handover before the first epoch committed");
                    if (_epoch.Count > 0 || state is not null) throw new MigrationException("migration stream: a Handover in the middle of an epoch");
                    if (handedOver != checkpoint.Epoch) throw new MigrationException($"migration stream: a Handover of epoch {handedOver}, and epoch {checkpoint.Epoch} is the last committed");
                    return handedOver;
                default:
                    throw new MigrationException($"migration stream: unexpected {type} frame in an epoch");
            }
        }

    }

    /// <summary>An epoch carries each dirty page and disk block once (with its 8-byte address), and the state: a bound on
    /// what a peer may make this standby keep aside, on top of the replica's RAM.</summary>
    private static long MaxEpochBytes(MigrationHello hello)
    {
        long ram = (long)hello.Description.MemoryBytes;
        return ram + ram / MigrationChannel.PageSize * 8 + hello.CopiedDiskBytes!.Sum() + (64 << 20);
    }

    /// <summary>Answers the Handover (the checkpoint is final: the epoch applied, nothing kept aside) and waits for the
    /// primary's last word: its Handover again, sent once it has the answer and stops its VM. A primary that missed the
    /// answer sends an Abort instead and runs on: then nothing is held here. One whose stream ends or goes silent
    /// instead counts as lost (a fence before any resume): it may have missed the answer and run on.</summary>
    private void ConfirmHandover(long epoch)
    {
        Answer(MigrationFrameType.Handover, BitConverter.GetBytes(epoch));
        var (type, payload) = Receive();
        if (type == MigrationFrameType.Abort) throw new PrimaryEndedException(Encoding.UTF8.GetString(payload.Span));
        if (type != MigrationFrameType.Handover || payload.Length != 8 || BinaryPrimitives.ReadInt64LittleEndian(payload.Span) != epoch)
            throw new MigrationException($"migration stream: a {type} frame after the handover, not the primary's last Handover of epoch {epoch}");
        // The primary had the echo, and its VM stops. (A stream that ends here instead is a lost primary's: it may or
        // may not have had the echo, and may run on.)
    }

    private (MigrationFrameType Type, ReadOnlyMemory<byte> Payload) Receive()
    {
        var frame = channel.Receive(ref _buffer);
        Interlocked.Exchange(ref _lastHeardTicks, Stopwatch.GetTimestamp());
        // A frame after an answer: the primary had that answer.
        Interlocked.Exchange(ref _answerHeardTicks, Interlocked.Read(ref _lastAnsweredTicks));
        return frame;
    }

    /// <summary>Sends the primary an answer (Ready, PassDone, a heartbeat, a commit, a handover's echo) and notes when.</summary>
    private void Answer(MigrationFrameType type, ReadOnlySpan<byte> payload)
    {
        channel.Send(type, payload);
        channel.Flush();
        Interlocked.Exchange(ref _lastAnsweredTicks, Stopwatch.GetTimestamp());
    }

    private void Keep(MigrationFrameType type, ReadOnlyMemory<byte> payload, long maxEpochBytes)
    {
        _epochBytes += payload.Length;
        if (_epochBytes > maxEpochBytes) throw new MigrationException($"migration stream: an epoch of more than {maxEpochBytes >> 20} MiB");
        _epoch.Add((type, payload.ToArray()));
    }

    /// <summary>Applies a whole epoch: every frame in it was checked on arrival, so only the host's disk can fail here
    /// (and then the standby gives up rather than hold a torn checkpoint: <see cref="ReplicaStorageException"/>).</summary>
    private void Commit(long epoch, MachineState state)
    {
        var checkpoint = Checkpoint!;
        var committing = Stopwatch.StartNew();
        int frames = _epoch.Count;
        long bytes = _epochBytes;
        ApplyKept();
        // The first commit names the images; from then on they always match the committed RAM.
        if (checkpoint.Epoch == 0) Store(checkpoint.Disks.Commit);
        checkpoint.Commit(epoch, state);
        log.Debug($"standby: epoch {epoch} committed ({frames} frames, {bytes >> 10} KiB) in {committing.Elapsed.TotalMilliseconds:F1} ms");
    }

    /// <summary>Applies the frames kept aside (checked on arrival) and empties the store.</summary>
    private void ApplyKept()
    {
        var checkpoint = Checkpoint!;
        foreach (var (type, payload) in _epoch)
        {
            switch (type)
            {
                case MigrationFrameType.Pages: PagesFrames.Apply(checkpoint.Memory, payload); break;
                case MigrationFrameType.DiskData: Store(() => checkpoint.Disks.WriteData(payload)); break;
                default: Store(() => checkpoint.Disks.WriteZero(payload)); break;
            }
        }
        _epoch.Clear();
        _epochBytes = 0;
    }

    private void Discard()
    {
        Checkpoint?.Dispose();
        Checkpoint = null;
    }

    private void TryAnswer(MigrationFrameType type, string message)
    {
        try
        {
            channel.SendText(type, message);
            channel.Flush();
        }
        catch (MigrationException)
        {
            // The primary is gone; it learns nothing more.
        }
    }

    /// <summary>Writes to the replica's disk images: a failure there (ENOSPC, EIO) is this host's, never the connection's.</summary>
    private static void Store(Action write)
    {
        try
        {
            write();
        }
        catch (MigrationException e)
        {
            throw new ReplicaStorageException(e.Message, e);
        }
    }

    private sealed class PrimaryEndedException(string message) : VmmException(message);

    /// <summary>The standby's own storage failed while it wrote the replica.</summary>
    private sealed class ReplicaStorageException(string message, Exception inner) : VmmException(message, inner);
}
