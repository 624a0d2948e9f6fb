using Vmm.Diagnostics;
using Vmm.Migration;
using Vmm.Replication;

namespace Vmm.Fuzz;

/// <summary>The standby side of replication: <see cref="StandbyReceiver"/> over a stream a hostile primary wrote
/// (the Hello, the first full copy, epochs of pages, disk blocks and state, heartbeats, an abort). The receiver
/// never throws: it ends every stream with an outcome, and one whose reason is an internal error is a bug surfacing.
/// An input is accepted when it left a committed epoch to resume. The first byte chooses checksum repair, as for
/// <see cref="MigrationStreamTarget"/>.</summary>
public sealed class StandbyStreamTarget : IFuzzTarget
{
    private const ulong MaxRamBytes = 64UL << 20;
    private static readonly Logger Quiet = new(TextWriter.Null, LogLevel.Error);

    public string Name => "standby";

    public string? Run(ReadOnlySpan<byte> input)
    {
        if (input.IsEmpty) return "empty";
        byte[] stream = input[1..].ToArray();
        if ((input[0] & 1) != 0) MigrationStreamTarget.RepairChecksums(stream);
        string disks = Directory.CreateTempSubdirectory("vmm-fuzz-standby-").FullName;
        try
        {
            var receiver = new StandbyReceiver(new MigrationChannel(new MigrationStreamTarget.InputStream(stream)), Quiet, disks, TimeSpan.FromSeconds(1), TimeSpan.Zero);
            var outcome = receiver.Run(hello =>
            {
                if (hello.Description.MemoryBytes > MaxRamBytes) throw new MigrationException("more RAM than the fuzz target holds");
            });
            if (outcome.Reason.Contains("internal error in vmm", StringComparison.Ordinal)) throw new InvalidOperationException(outcome.Reason);
            using var checkpoint = outcome.Checkpoint;
            return checkpoint is { Epoch: > 0 } ? null : outcome.Reason;
        }
        finally
        {
            Directory.Delete(disks, recursive: true);
        }
    }

    /// <summary>A replication as a primary sends it: Hello, the first copy, epochs (pages, disk blocks, the state,
    /// the end), sometimes a heartbeat or an abort; the stream then ends, as when the primary dies.</summary>
    public IEnumerable<byte[]> Generate(int count, int seed) => Mutations.Mix(count, seed, random =>
    {
        var description = StateSamples.Description(random, MaxRamBytes);
        var output = new MemoryStream();
        output.WriteByte((byte)random.Next(2));
        var channel = new MigrationChannel(output);
        long[] diskBytes = description.Disks.Select(_ => (long)random.Next(1, 2049) * 512).ToArray();
        channel.Send(MigrationFrameType.Hello, new MigrationHello($"fuzz-{random.Next(1000)}", description, diskBytes, Replication: true).ToBytes());
        for (int frame = random.Next(3); frame > 0; frame--) channel.Send(MigrationFrameType.Pages, MigrationStreamTarget.Pages(random, description.MemoryBytes));
        channel.Send(MigrationFrameType.PassEnd, BitConverter.GetBytes(1));
        int epochs = random.Next(0, 4);
        for (long epoch = 1; epoch <= epochs; epoch++)
        {
            if (random.Next(4) == 0) channel.Send(MigrationFrameType.Heartbeat, []);
            for (int frame = random.Next(3); frame > 0; frame--) channel.Send(MigrationFrameType.Pages, MigrationStreamTarget.Pages(random, description.MemoryBytes));
            for (int frame = diskBytes.Length > 0 ? random.Next(3) : 0; frame > 0; frame--)
            {
                int disk = random.Next(diskBytes.Length);
                long offset = random.NextInt64(diskBytes[disk] / 512) * 512;
                int length = (int)Math.Min(random.Next(1, 65) * 512, diskBytes[disk] - offset);
                if (random.Next(4) == 0) channel.Send(MigrationFrameType.DiskZero, [.. BitConverter.GetBytes(disk), .. BitConverter.GetBytes(offset), .. BitConverter.GetBytes((long)length)]);
                else channel.Send(MigrationFrameType.DiskData, [.. BitConverter.GetBytes(disk), .. BitConverter.GetBytes(offset), .. Mutations.RandomBytes(random, length)]);
            }
            channel.Send(MigrationFrameType.State, StateSamples.State(random, description).ToBytes());
            channel.Send(MigrationFrameType.EpochEnd, BitConverter.GetBytes(epoch));
        }
        if (random.Next(8) == 0) channel.SendText(MigrationFrameType.Abort, "stopped on the primary");
        return output.ToArray();
    });
}
