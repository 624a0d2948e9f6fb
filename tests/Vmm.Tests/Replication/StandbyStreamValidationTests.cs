using System.Buffers.Binary;
using Vmm.Devices.Virtio;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Migration;
using Vmm.Replication;
using Vmm.State;
using Vmm.Tests.Migration;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Replication;

/// <summary>The standby treats the replication stream as hostile, and holds only whole committed epochs: an epoch
/// cut off half way changes nothing it holds, and a malformed one ends the stream with an error to the primary and
/// nothing to resume.</summary>
public sealed class StandbyStreamValidationTests : IDisposable
{
    private static readonly MachineDescription SmallVm = new(64UL << 20, 1, [], []);
    private const ulong PageA = 0x200000;
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-standby-").FullName;
    private readonly Logger _log = new(TextWriter.Null, LogLevel.Debug);

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static byte[] Frame(MigrationFrameType type, ReadOnlySpan<byte> payload)
    {
        var stream = new MemoryStream();
        new MigrationChannel(stream).Send(type, payload);
        return stream.ToArray();
    }

    private static byte[] Hello(bool replication = true) =>
        Frame(MigrationFrameType.Hello, new MigrationHello("test-vm", SmallVm, [], Replication: replication).ToBytes());

    private static byte[] PageFrame(ulong address, byte fill)
    {
        var payload = new byte[4 + 8 + 4096];
        BinaryPrimitives.WriteUInt32LittleEndian(payload, 1);
        BinaryPrimitives.WriteUInt64LittleEndian(payload.AsSpan(4), address);
        payload.AsSpan(12).Fill(fill);
        return Frame(MigrationFrameType.Pages, payload);
    }

    private static byte[] Number(MigrationFrameType type, long value) => Frame(type, BitConverter.GetBytes(value));
    private static byte[] PassEnd => Frame(MigrationFrameType.PassEnd, BitConverter.GetBytes(1));

    private byte[] State(MachineDescription? vm = null)
    {
        using var machine = MachineBuilder.ForRestore((vm ?? SmallVm).ToConfig(new MachineConfig { SerialOutput = Stream.Null }), _log);
        machine.Pause();
        return Frame(MigrationFrameType.State, MachinePersistence.Save(machine).ToBytes());
    }

    private (StandbyOutcome Outcome, byte[] Answers) Receive(params byte[][] frames)
    {
        var answers = new MemoryStream();
        var input = new MemoryStream(frames.SelectMany(f => f).ToArray());
        var receiver = new StandbyReceiver(new MigrationChannel(new DuplexStream(input, answers)), _log, _directory, TimeSpan.FromSeconds(1), TimeSpan.Zero);
        return (receiver.Run(_ => { }), answers.ToArray());
    }

    private static List<MigrationFrameType> AnswerTypes(byte[] answers)
    {
        var channel = new MigrationChannel(new MemoryStream(answers));
        var types = new List<MigrationFrameType>();
        byte[] buffer = new byte[4096];
        for (int read = 0; read < answers.Length;)
        {
            var (type, payload) = channel.Receive(ref buffer);
            types.Add(type);
            read += MigrationChannel.HeaderBytes + payload.Length;
        }
        return types;
    }

    private static byte PageByte(StandbyCheckpoint checkpoint)
    {
        // The checkpoint's RAM, through a machine built on it: what a failover would resume.
        using var machine = checkpoint.Resume(new MachineConfig { SerialOutput = Stream.Null, Name = "test-vm" }, new Logger(TextWriter.Null, LogLevel.Error));
        return machine.Memory.Read<byte>(PageA);
    }

    [Fact]
    public void AnEpochCutOffHalfWay_LeavesTheLastCommittedOneWhole()
    {
        var (outcome, answers) = Receive(Hello(), PageFrame(PageA, 0x10), PassEnd,
            PageFrame(PageA, 0x11), State(), Number(MigrationFrameType.EpochEnd, 1),
            PageFrame(PageA, 0x12)); // epoch 2: its page is in, its end never comes
        Assert.Contains("the primary was lost", outcome.Reason);
        Assert.NotNull(outcome.Checkpoint);
        using var checkpoint = outcome.Checkpoint!;
        Assert.Equal(1, checkpoint.Epoch);
        Assert.Equal([MigrationFrameType.Ready, MigrationFrameType.PassDone, MigrationFrameType.EpochCommitted], AnswerTypes(answers));
        Assert.Equal(0x11, PageByte(checkpoint));
    }

    /// <summary>A disk write that fails on the standby (here ENOSPC, a full tmpfs) half way through applying epoch 2,
    /// after its RAM was applied: that is this host's failure, not a lost primary, and what is held is no checkpoint
    /// (RAM of epoch 2, disks of neither). The primary is told, and nothing is left to resume. (It counted as a lost
    /// connection and the torn replica was resumable: issue 18, defect 3.)</summary>
    [Fact]
    public void ADiskWriteFailingOnTheStandby_IsNoLostConnection_AndLeavesNoTornReplica()
    {
        string full = Directory.CreateDirectory(Path.Combine(_directory, "full")).FullName;
        HostCommand.Checked("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", full);
        try
        {
            string image = Path.Combine(_directory, "disk.img");
            using (var file = File.Create(image)) file.SetLength(4 << 20);
            var vm = SmallVm with { Disks = [new BlockDiskConfig(image, false, null)] };
            byte[] hello = Frame(MigrationFrameType.Hello, new MigrationHello("test-vm", vm, [4 << 20], Replication: true).ToBytes());
            var answers = new MemoryStream();
            var input = new MemoryStream(new[]
            {
                hello, DiskData(0, new byte[4096]), PassEnd, PageFrame(PageA, 0x11), State(vm), Number(MigrationFrameType.EpochEnd, 1),
                PageFrame(PageA, 0x12), DiskData(1 << 20, new byte[1 << 20].Select((_, i) => (byte)(i * 7 + 1)).ToArray()), State(vm), Number(MigrationFrameType.EpochEnd, 2),
            }.SelectMany(f => f).ToArray());
            var receiver = new StandbyReceiver(new MigrationChannel(new DuplexStream(input, answers)), _log, full, TimeSpan.FromSeconds(1), TimeSpan.Zero);

            var outcome = receiver.Run(_ => { });

            Assert.Null(outcome.Checkpoint);
            Assert.Contains("the standby's storage failed", outcome.Reason);
            Assert.Equal([MigrationFrameType.Ready, MigrationFrameType.PassDone, MigrationFrameType.EpochCommitted, MigrationFrameType.Error], AnswerTypes(answers.ToArray()));
            Assert.Empty(Directory.GetFileSystemEntries(full));
        }
        finally
        {
            // Lazily: a replica a failing assertion left open must not keep the mount (and the test directory) busy.
            HostCommand.Run("umount", "-l", full);
        }
    }

    private static byte[] DiskData(long offset, byte[] bytes)
    {
        var payload = new byte[MigrationChannel.DiskDataHeaderBytes + bytes.Length];
        BinaryPrimitives.WriteInt64LittleEndian(payload.AsSpan(4), offset);
        bytes.CopyTo(payload, MigrationChannel.DiskDataHeaderBytes);
        return Frame(MigrationFrameType.DiskData, payload);
    }

    /// <summary>Catch-up passes of the first copy (what the guest changed while it was copied) go straight in before the
    /// first epoch: each is acknowledged, and the first epoch builds on them.</summary>
    [Fact]
    public void CatchUpPasses_BeforeTheFirstEpoch_AreAppliedAndAcknowledged()
    {
        var (outcome, answers) = Receive(Hello(), PageFrame(PageA, 0x10), PassEnd,
            PageFrame(PageA, 0x11), Frame(MigrationFrameType.PassEnd, BitConverter.GetBytes(2)),
            PageFrame(PageA, 0x12), Frame(MigrationFrameType.PassEnd, BitConverter.GetBytes(3)),
            State(), Number(MigrationFrameType.EpochEnd, 1));
        using var checkpoint = outcome.Checkpoint!;
        Assert.Equal(1, checkpoint.Epoch);
        Assert.Equal([MigrationFrameType.Ready, MigrationFrameType.PassDone, MigrationFrameType.PassDone, MigrationFrameType.PassDone, MigrationFrameType.EpochCommitted], AnswerTypes(answers));
        Assert.Equal(0x12, PageByte(checkpoint));
    }

    [Fact]
    public void LostBeforeTheFirstCommit_NothingToResume_AndNoImageLeft()
    {
        var (outcome, _) = Receive(Hello(), PageFrame(PageA, 0x10), PassEnd, PageFrame(PageA, 0x11));
        Assert.Null(outcome.Checkpoint);
        Assert.Contains("before the first epoch committed", outcome.Reason);
        Assert.Empty(Directory.GetFileSystemEntries(_directory));
    }

    [Theory]
    [InlineData("epoch 2 first")]
    [InlineData("no state")]
    [InlineData("two states")]
    [InlineData("page outside RAM")]
    [InlineData("bad PassEnd")]
    [InlineData("corrupted frame")]
    [InlineData("handover before the first commit")]
    [InlineData("handover with pages kept aside")]
    [InlineData("handover with a state kept aside")]
    [InlineData("handover of another epoch")]
    [InlineData("catch-up pass out of order")]
    [InlineData("catch-up pass after the first epoch")]
    public void AMalformedStream_IsRefused_ThePrimaryIsTold_AndNothingIsHeld(string fault)
    {
        byte[][] frames = fault switch
        {
            "epoch 2 first" => [Hello(), PassEnd, State(), Number(MigrationFrameType.EpochEnd, 2)],
            "no state" => [Hello(), PassEnd, PageFrame(PageA, 1), Number(MigrationFrameType.EpochEnd, 1)],
            "two states" => [Hello(), PassEnd, State(), State(), Number(MigrationFrameType.EpochEnd, 1)],
            "page outside RAM" => [Hello(), PassEnd, State(), Number(MigrationFrameType.EpochEnd, 1), PageFrame(1UL << 40, 1)],
            "bad PassEnd" => [Hello(), Frame(MigrationFrameType.PassEnd, BitConverter.GetBytes(7))],
            "handover before the first commit" => [Hello(), PassEnd, Number(MigrationFrameType.Handover, 0)],
            "handover with pages kept aside" => [Hello(), PassEnd, State(), Number(MigrationFrameType.EpochEnd, 1), PageFrame(PageA, 1), Number(MigrationFrameType.Handover, 1)],
            "handover with a state kept aside" => [Hello(), PassEnd, State(), Number(MigrationFrameType.EpochEnd, 1), State(), Number(MigrationFrameType.Handover, 1)],
            "handover of another epoch" => [Hello(), PassEnd, State(), Number(MigrationFrameType.EpochEnd, 1), Number(MigrationFrameType.Handover, 2)],
            "catch-up pass out of order" => [Hello(), PassEnd, PageFrame(PageA, 1), Frame(MigrationFrameType.PassEnd, BitConverter.GetBytes(3))],
            "catch-up pass after the first epoch" => [Hello(), PassEnd, State(), Number(MigrationFrameType.EpochEnd, 1), Frame(MigrationFrameType.PassEnd, BitConverter.GetBytes(2))],
            _ => [Hello(), PassEnd, Corrupt(PageFrame(PageA, 1))],
        };
        var (outcome, answers) = Receive(frames);
        Assert.Null(outcome.Checkpoint);
        Assert.Contains("replication refused", outcome.Reason);
        Assert.Equal(MigrationFrameType.Error, AnswerTypes(answers)[^1]);
        Assert.Empty(Directory.GetFileSystemEntries(_directory));
    }

    private static byte[] Corrupt(byte[] frame)
    {
        frame[^1] ^= 1;
        return frame;
    }

    [Fact]
    public void AMigration_IsRefusedByAStandby()
    {
        var (outcome, answers) = Receive(Hello(replication: false));
        Assert.Null(outcome.Checkpoint);
        Assert.Contains("this is a standby", outcome.Reason);
        Assert.Equal([MigrationFrameType.Error], AnswerTypes(answers));
    }

    [Fact]
    public void ThePrimaryEndingReplication_LeavesNothingToResume()
    {
        var (outcome, answers) = Receive(Hello(), PassEnd, State(), Number(MigrationFrameType.EpochEnd, 1),
            Frame(MigrationFrameType.Abort, "stopped on the primary"u8));
        // Answered, once the copy is gone: only then may the primary let the guest's held output go.
        Assert.Equal(MigrationFrameType.Heartbeat, AnswerTypes(answers)[^1]);
        Assert.Null(outcome.Checkpoint);
        Assert.Contains("the primary ended replication: stopped on the primary", outcome.Reason);
        Assert.Empty(Directory.GetFileSystemEntries(_directory));
    }

    [Fact]
    public void AHandoverAfterACommit_IsEchoed_AndThePrimarysLastWord_LeavesTheEpochHandedOver()
    {
        var (outcome, answers) = Receive(Hello(), PageFrame(PageA, 0x10), PassEnd,
            PageFrame(PageA, 0x11), State(), Number(MigrationFrameType.EpochEnd, 1),
            Frame(MigrationFrameType.Heartbeat, []), Number(MigrationFrameType.Handover, 1), Number(MigrationFrameType.Handover, 1));
        Assert.True(outcome.HandedOver, outcome.Reason);
        Assert.Contains("handed the VM over at epoch 1", outcome.Reason);
        using var checkpoint = outcome.Checkpoint!;
        Assert.Equal(1, checkpoint.Epoch);
        Assert.Equal([MigrationFrameType.Ready, MigrationFrameType.PassDone, MigrationFrameType.EpochCommitted, MigrationFrameType.Heartbeat, MigrationFrameType.Handover], AnswerTypes(answers));
        Assert.Equal(0x11, PageByte(checkpoint));
    }

    /// <summary>The stream ends after the echo without the primary's last word: the primary may have missed the echo
    /// (a proxy that cut both halves at once, say) and run on, so the replica is a lost primary's, fenced before any
    /// resume, not a handed-over one resumed on request. (Taking the close as the primary's word let the fault harness
    /// resume a replica beside a primary that ran on: issue 18, item 5.)</summary>
    [Fact]
    public void AStreamEndingAfterTheEcho_WithoutThePrimarysLastWord_LeavesALostPrimarysReplica()
    {
        var (outcome, answers) = Receive(Hello(), PassEnd, State(), Number(MigrationFrameType.EpochEnd, 1), Number(MigrationFrameType.Handover, 1));
        Assert.False(outcome.HandedOver, outcome.Reason);
        using var checkpoint = outcome.Checkpoint!;
        Assert.Equal(1, checkpoint.Epoch);
        Assert.Contains("the primary was lost", outcome.Reason);
        Assert.Equal(MigrationFrameType.Handover, AnswerTypes(answers)[^1]);
    }

    [Fact]
    public void APrimaryThatAbortsAfterItsHandover_RunsOn_SoNothingIsHeld()
    {
        // The primary missed the answer (it timed out) and resumed its VM: the replica must not be resumed too.
        var (outcome, answers) = Receive(Hello(), PassEnd, State(), Number(MigrationFrameType.EpochEnd, 1),
            Number(MigrationFrameType.Handover, 1), Frame(MigrationFrameType.Abort, "the handover failed"u8));
        Assert.False(outcome.HandedOver);
        Assert.Null(outcome.Checkpoint);
        Assert.Equal(MigrationFrameType.Heartbeat, AnswerTypes(answers)[^1]);
        Assert.Empty(Directory.GetFileSystemEntries(_directory));
    }

    [Fact]
    public void AHeartbeat_IsAnsweredInKind()
    {
        var (outcome, answers) = Receive(Hello(), PassEnd, Frame(MigrationFrameType.Heartbeat, []));
        Assert.Null(outcome.Checkpoint);
        Assert.Equal([MigrationFrameType.Ready, MigrationFrameType.PassDone, MigrationFrameType.Heartbeat], AnswerTypes(answers));
    }

    [Fact]
    public void AReplication_IsRefusedByAMigrationTarget()
    {
        var answers = new MemoryStream();
        var receiver = new MigrationReceiver(new DuplexStream(new MemoryStream(Hello()), answers), _log);
        var failure = Assert.Throws<MigrationException>(() => receiver.Receive(d => new MachineDestination(MachineBuilder.ForRestore(d.ToConfig(new MachineConfig { SerialOutput = Stream.Null }), _log))));
        Assert.Contains("replication goes to 'vmm standby'", failure.Message);
    }
}
