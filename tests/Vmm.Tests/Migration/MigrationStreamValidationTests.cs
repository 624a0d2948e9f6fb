using System.Buffers.Binary;
using CsCheck;
using Vmm.Serialization;
using Vmm.Devices.Virtio;
using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.State;
using Vmm.Tests.Integration;
using Vmm.Tests.State;
using Vmm.Vm;
using Xunit;

namespace Vmm.Tests.Migration;

/// <summary>The target treats the migration stream as hostile: every malformed, truncated or corrupted
/// stream ends in a <see cref="MigrationException"/> (reported to the source), never in a crash, a wild
/// write or a VM that runs.</summary>
public sealed class MigrationStreamValidationTests
{
    private static readonly MachineDescription SmallVm = new(64UL << 20, 1, [], []);
    private readonly Logger _log = new(TextWriter.Null, LogLevel.Debug);

    private static byte[] Frame(MigrationFrameType type, ReadOnlySpan<byte> payload)
    {
        var stream = new MemoryStream();
        new MigrationChannel(stream).Send(type, payload);
        return stream.ToArray();
    }

    private static byte[] Hello(MachineDescription description, uint version = MigrationChannel.ProtocolVersion, string magic = "VMMMIGRT", IReadOnlyList<long>? copiedDiskBytes = null)
    {
        if (version == 1)
        {
            var w = new StateWriter();
            foreach (char c in magic) w.WriteUInt8((byte)c);
            w.WriteUInt32(version);
            DescriptionWithoutCpuid.Write(w, description);
            return Frame(MigrationFrameType.Hello, w.ToArray());
        }
        byte[] hello = new MigrationHello("test-vm", description, copiedDiskBytes).ToBytes();
        System.Text.Encoding.ASCII.GetBytes(magic).CopyTo(hello, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(hello.AsSpan(8), version);
        return Frame(MigrationFrameType.Hello, hello);
    }

    private static byte[] Pages(params (ulong Entry, byte[]? Data)[] pages)
    {
        var payload = new MemoryStream();
        Span<byte> word = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(word, (uint)pages.Length);
        payload.Write(word[..4]);
        // Every address first, then the data of the pages that have it.
        foreach (var (entry, _) in pages)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(word, entry);
            payload.Write(word);
        }
        foreach (var (_, data) in pages)
            if (data is not null) payload.Write(data);
        return Frame(MigrationFrameType.Pages, payload.ToArray());
    }

    /// <summary>Runs a receiver on <paramref name="stream"/>; returns what it threw and what it answered.</summary>
    private (Exception? Failure, byte[] Answer) Receive(byte[] stream) => Receive(stream, _ => { });

    /// <param name="inspect">Sees the machine the receiver built, before it is discarded.</param>
    private (Exception? Failure, byte[] Answer) Receive(byte[] stream, Action<Machine> inspect)
    {
        var answers = new MemoryStream();
        var receiver = new MigrationReceiver(new DuplexStream(new MemoryStream(stream), answers), _log);
        try
        {
            using var machine = receiver.Receive(d =>
            {
                var built = MachineBuilder.ForRestore(d.ToConfig(new MachineConfig { SerialOutput = Stream.Null }), _log);
                inspect(built);
                return new MachineDestination(built);
            });
            return (null, answers.ToArray());
        }
        catch (Exception e)
        {
            return (e, answers.ToArray());
        }
    }

    private static void AssertRefusedWith(string expected, (Exception? Failure, byte[] Answer) result)
    {
        var failure = Assert.IsType<MigrationException>(result.Failure);
        Assert.Contains(expected, failure.Message);
        // The source hears why (an Error frame is the last thing the target sent).
        Assert.Contains((byte)MigrationFrameType.Error, result.Answer);
    }

    /// <summary>Runs a receiver that takes joins (<paramref name="joins"/>) on <paramref name="stream"/>'s first frame.</summary>
    private (Exception? Failure, byte[] Answer) ReadFirstFrame(byte[] stream, MigrationJoins joins)
    {
        var answers = new MemoryStream();
        var receiver = new MigrationReceiver(new DuplexStream(new MemoryStream(stream), answers), _log, joins: joins);
        try
        {
            receiver.ReadHelloOrServeJoin();
            return (null, answers.ToArray());
        }
        catch (Exception e)
        {
            return (e, answers.ToArray());
        }
    }

    [Fact]
    public void AJoinWithATokenNoMigrationHas_IsRefused() =>
        AssertRefusedWith("a token no migration here has", ReadFirstFrame(Frame(MigrationFrameType.Join, new MigrationJoin(MigrationJoin.NewToken(), 1).ToBytes()), new MigrationJoins()));

    [Fact]
    public void AJoinInPlaceOfTheHello_AtATargetTakingOneConnection_IsRefused() =>
        AssertRefusedWith("expected a Hello frame, got Join", Receive(Frame(MigrationFrameType.Join, new MigrationJoin(MigrationJoin.NewToken(), 1).ToBytes())));

    [Fact]
    public void AShortJoin_IsRefused() =>
        AssertRefusedWith("a Join frame of 4 bytes", ReadFirstFrame(Frame(MigrationFrameType.Join, new byte[4]), new MigrationJoins()));

    [Fact]
    public void AHelloAskingForSeveralConnections_AtATargetTakingOne_IsRefused() =>
        AssertRefusedWith("asks for 4 connections, and this target takes one per migration",
            Receive(Frame(MigrationFrameType.Hello, new MigrationHello("test-vm", SmallVm, null, Connections: 4).ToBytes())));

    [Fact]
    public void AHelloAskingForMoreConnectionsThanAllowed_IsRefused()
    {
        byte[] hello = new MigrationHello("test-vm", SmallVm, null, Connections: 4).ToBytes();
        // The count is the byte before the 16-byte migration id.
        hello[^17] = MigrationHello.MaxConnections + 1;
        AssertRefusedWith($"{MigrationHello.MaxConnections + 1} connections (2 to {MigrationHello.MaxConnections}", ReadFirstFrame(Frame(MigrationFrameType.Hello, hello), new MigrationJoins()));
    }

    [Fact]
    public void BadMagic_IsRefused() => AssertRefusedWith("bad magic", Receive(Hello(SmallVm, magic: "NOTVMMMI")));

    [Fact]
    public void OtherProtocolVersion_IsRefused() => AssertRefusedWith("protocol version 99", Receive(Hello(SmallVm, version: 99)));

    [Fact]
    public void ChecksumMismatch_IsRefused()
    {
        byte[] stream = Hello(SmallVm);
        stream[^1] ^= 0x40;
        AssertRefusedWith("checksum mismatch", Receive(stream));
    }

    [Fact]
    public void OversizedFrame_IsRefusedBeforeItIsRead()
    {
        byte[] header = new byte[9];
        header[0] = (byte)MigrationFrameType.Pages;
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(1), uint.MaxValue);
        AssertRefusedWith("at most", Receive([.. Hello(SmallVm), .. header]));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public void PassEndWithoutAWholePassNumber_IsRefused(int length) =>
        AssertRefusedWith($"a PassEnd frame of {length} bytes", Receive([.. Hello(SmallVm), .. Frame(MigrationFrameType.PassEnd, new byte[length])]));

    [Fact]
    public void UnknownFrameType_IsRefused() => AssertRefusedWith("unknown frame type", Receive([.. Hello(SmallVm), .. Frame((MigrationFrameType)99, [])]));

    [Fact]
    public void PageOutsideGuestRam_IsRefused() =>
        AssertRefusedWith("not inside guest RAM", Receive([.. Hello(SmallVm), .. Pages((0xC000_0000, new byte[4096]))]));

    [Fact]
    public void PageWithUnknownFlags_IsRefused() =>
        AssertRefusedWith("unknown flags", Receive([.. Hello(SmallVm), .. Pages((0x1000 | 0x4, null))]));

    [Fact]
    public void TruncatedPagesFrame_IsRefused() =>
        AssertRefusedWith("truncated", Receive([.. Hello(SmallVm), .. Pages((0x1000, new byte[100]))]));

    [Fact]
    public void StreamThatEndsBeforeTheState_IsRefused() =>
        AssertRefusedWith("connection closed", Receive([.. Hello(SmallVm), .. Pages((0x1000, new byte[4096]))]));

    [Fact]
    public void SourceAbort_IsReportedAsSuch()
    {
        var stream = new MemoryStream();
        new MigrationChannel(stream).SendText(MigrationFrameType.Abort, "disk on fire");
        AssertRefusedWith("the source gave up: disk on fire", Receive([.. Hello(SmallVm), .. stream.ToArray()]));
    }

    [Fact]
    public void GarbageState_IsRefused() =>
        AssertRefusedWith("not a vmm state", Receive([.. Hello(SmallVm), .. Frame(MigrationFrameType.State, "VMMSTATX1234"u8)]));

    [Fact]
    public void DescriptionOfAnImpossibleMachine_IsRefused() =>
        AssertRefusedWith("memory size", Receive(Hello(SmallVm with { MemoryBytes = 12345 })));

    [Fact]
    public void AHelloShowingAFeatureThisHostsKvmLacks_IsRefusedNamingIt()
    {
        var shown = FeatureThisHostLacks.Offered();
        FeatureThisHostLacks.ShowIn(shown);
        bool built = false;

        var result = Receive(Hello(SmallVm with { VcpuCpuid = [shown] }), _ => built = true);

        AssertRefusedWith($"this host's KVM cannot give the guest the CPU it was shown: {FeatureThisHostLacks.Feature}", result);
        Assert.False(built);
        Assert.Equal((byte)MigrationFrameType.Error, result.Answer[0]);
    }

    [Fact]
    public void AHelloWithTheCpuidOfThisHost_IsTaken_AndTheVcpusShowIt()
    {
        var shown = FeatureThisHostLacks.Offered();
        shown[Array.FindIndex(shown, e => e.Function == 0x8000_0001)].Ecx &= ~1u;
        uint? shownOnTheVcpu = null;

        var (failure, answer) = Receive(Hello(SmallVm with { VcpuCpuid = [shown] }),
            machine => shownOnTheVcpu = machine.VcpuCpuid[0].First(e => e.Function == 0x8000_0001).Ecx);

        // The stream ends after the Hello: the target built the machine, said Ready, and then found the stream cut.
        Assert.Contains("connection closed", Assert.IsType<MigrationException>(failure).Message);
        Assert.Equal((byte)MigrationFrameType.Ready, answer[0]);
        Assert.Equal(shown.First(e => e.Function == 0x8000_0001).Ecx, shownOnTheVcpu);
    }

    [Theory]
    [InlineData(1u)]
    [InlineData(2u)]
    public void AHelloFromBeforeTheCommitStep_IsRefusedWithTheReason(uint version)
    {
        // Such a source took a lost confirmation for a failed migration and resumed its VM beside this one.
        bool built = false;
        var (failure, answer) = Receive(Hello(SmallVm, version: version), _ => built = true);

        Assert.Contains($"protocol version {version}, without the commit step", Assert.IsType<MigrationException>(failure).Message);
        Assert.False(built);
        Assert.Equal((byte)MigrationFrameType.Error, answer[0]);
    }

    [Fact]
    public void DiskThatDoesNotExistHere_IsRefused() =>
        AssertRefusedWith("does not exist", Receive(Hello(SmallVm with { Disks = [new BlockDiskConfig("/nonexistent/disk.img", false, null)] })));

    [Fact]
    public void CopiedDisks_WithoutADiskDirectoryHere_AreRefused() =>
        AssertRefusedWith("no directory for them", Receive(Hello(SmallVm with { Disks = [new BlockDiskConfig("/vms/disk.img", false, null)] }, copiedDiskBytes: [1 << 20])));

    [Fact]
    public void DiskData_WhenTheHelloSaidTheDisksAreShared_IsRefused() =>
        AssertRefusedWith("the Hello said the disks are not copied", Receive([.. Hello(SmallVm), .. Frame(MigrationFrameType.DiskData, new byte[12 + 512])]));

    [Theory]
    [InlineData(1000L)]            // not whole sectors
    [InlineData(1L << 50)]         // beyond what a stream may ask for
    public void CopiedDiskSizes_ThatNoImageHas_AreRefused(long bytes) =>
        AssertRefusedWith("disk image size", Receive(Hello(SmallVm with { Disks = [new BlockDiskConfig("/vms/disk.img", false, null)] }, copiedDiskBytes: [bytes])));

    [Fact]
    public void AnyMutationOfAValidPrefix_EndsInAMigrationException()
    {
        byte[] valid = [.. Hello(SmallVm), .. Pages((0x1000, Enumerable.Repeat((byte)0xab, 4096).ToArray()), (0x2000 | MigrationChannel.ZeroPageFlag, null))];
        Gen.Select(Gen.Int[0, valid.Length - 1], Gen.Byte, Gen.Int[0, valid.Length]).Sample((position, value, length) =>
        {
            byte[] mutated = valid[..length];
            if (position < mutated.Length) mutated[position] = value;
            var (failure, _) = Receive(mutated);
            // Nothing completes without a State frame; whatever the damage, the failure is a MigrationException.
            Assert.IsType<MigrationException>(failure);
        }, iter: 40);
    }
}
