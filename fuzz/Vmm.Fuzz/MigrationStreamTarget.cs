using System.Buffers.Binary;
using Vmm.Arch;
using Vmm.Diagnostics;
using Vmm.Memory;
using Vmm.Migration;
using Vmm.Serialization;
using Vmm.State;

namespace Vmm.Fuzz;

/// <summary>The target side of a migration: <see cref="MigrationReceiver"/> over a stream a hostile peer wrote
/// (every frame type, the machine description, pages, the state). It may only refuse with a
/// <see cref="MigrationException"/> for an expected reason; one that wraps anything but vmm's own failures is
/// a bug surfacing. RAM is the described size up to 64 MiB (a real target would build the whole machine).
/// <para>The input's first byte chooses whether frame checksums are repaired before the stream is read, so a
/// fuzzer gets past the CRC to the parsers behind it: bit 0 set, repaired.</para></summary>
public sealed class MigrationStreamTarget : IFuzzTarget
{
    private const ulong MaxRamBytes = 64UL << 20;
    private static readonly Logger Quiet = new(TextWriter.Null, LogLevel.Error);

    public string Name => "migration";

    public string? Run(ReadOnlySpan<byte> input)
    {
        if (input.IsEmpty) return "empty";
        byte[] stream = input[1..].ToArray();
        if ((input[0] & 1) != 0) RepairChecksums(stream);
        // Copied disk images (storage migration) go into a directory of this input's own: inputs may run at the
        // same time (tests), and one's images must not collide with another's.
        string disks = Directory.CreateTempSubdirectory("vmm-fuzz-disks-").FullName;
        var receiver = new MigrationReceiver(new InputStream(stream), Quiet, disks);
        try
        {
            using var destination = receiver.Receive(description => new RamOnlyDestination(description));
            receiver.AwaitCommit();
            receiver.ConfirmResumed();
            return null;
        }
        catch (MigrationException refused) when (refused.InnerException is null or VmmException or EndOfStreamException)
        {
            return refused.Message;
        }
        catch (MigrationException bug)
        {
            throw new InvalidOperationException("the receiver met an unexpected exception", bug.InnerException);
        }
        finally
        {
            // A failed migration leaves no image behind (checked by tests); a completed one leaves its copies.
            Directory.Delete(disks, recursive: true);
        }
    }

    /// <summary>Walks the frames and writes each one's correct CRC-32C into its header.</summary>
    internal static void RepairChecksums(byte[] stream)
    {
        for (int position = 0; position + 9 <= stream.Length;)
        {
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(stream.AsSpan(position + 1));
            if (length > stream.Length - position - 9) return;
            BinaryPrimitives.WriteUInt32LittleEndian(stream.AsSpan(position + 5), Crc32C.Compute(stream.AsSpan(position + 9, (int)length)));
            position += 9 + (int)length;
        }
    }

    /// <summary>A whole migration as a source sends it: Hello, passes of pages (some zero), the state.</summary>
    public IEnumerable<byte[]> Generate(int count, int seed) => Mutations.Mix(count, seed, random =>
    {
        var description = StateSamples.Description(random, MaxRamBytes);
        var output = new MemoryStream();
        output.WriteByte((byte)random.Next(2));
        var channel = new MigrationChannel(output);
        // Half the streams copy the disks, with image sizes of a few sectors up to 1 MiB.
        long[]? diskBytes = random.Next(2) == 0 ? null : description.Disks.Select(_ => (long)random.Next(1, 2049) * 512).ToArray();
        channel.Send(MigrationFrameType.Hello, new MigrationHello($"fuzz-{random.Next(1000)}", description, diskBytes).ToBytes());
        int passes = random.Next(1, 4);
        for (int pass = 1; pass <= passes; pass++)
        {
            for (int frame = random.Next(3); frame > 0; frame--) channel.Send(MigrationFrameType.Pages, Pages(random, description.MemoryBytes));
            for (int frame = diskBytes is { Length: > 0 } ? random.Next(3) : 0; frame > 0; frame--)
            {
                int disk = random.Next(diskBytes!.Length);
                long offset = random.NextInt64(diskBytes[disk] / 512) * 512;
                int length = (int)Math.Min(random.Next(1, 65) * 512, diskBytes[disk] - offset);
                if (random.Next(4) == 0) channel.Send(MigrationFrameType.DiskZero, [.. BitConverter.GetBytes(disk), .. BitConverter.GetBytes(offset), .. BitConverter.GetBytes((long)length)]);
                else channel.Send(MigrationFrameType.DiskData, [.. BitConverter.GetBytes(disk), .. BitConverter.GetBytes(offset), .. Mutations.RandomBytes(random, length)]);
            }
            channel.Send(MigrationFrameType.PassEnd, BitConverter.GetBytes(pass));
        }
        if (random.Next(8) == 0) channel.SendText(MigrationFrameType.Abort, "the source gave up");
        else
        {
            channel.Send(MigrationFrameType.State, StateSamples.State(random, description).ToBytes());
            if (random.Next(4) != 0) channel.Send(MigrationFrameType.Commit, []);
        }
        return output.ToArray();
    });

    internal static byte[] Pages(Random random, ulong memoryBytes)
    {
        int count = random.Next(1, 5);
        var w = new MemoryStream();
        var data = new MemoryStream();
        w.Write(BitConverter.GetBytes((uint)count));
        // Sometimes a run of adjacent pages, which the receiver reads in one go.
        ulong address = (ulong)random.NextInt64(0, (long)(memoryBytes >> 12)) << 12;
        for (int i = 0; i < count; i++)
        {
            if (random.Next(2) == 0) address = (ulong)random.NextInt64(0, (long)(memoryBytes >> 12)) << 12;
            else if (i > 0) address += MigrationChannel.PageSize;
            bool zero = random.Next(3) == 0;
            w.Write(BitConverter.GetBytes(address | (zero ? MigrationChannel.ZeroPageFlag : 0)));
            if (!zero) data.Write(Mutations.RandomBytes(random, MigrationChannel.PageSize));
        }
        data.WriteTo(w);
        return w.ToArray();
    }

    /// <summary>Fresh RAM of the described size (capped), and a restore that only has the state parsed.</summary>
    private sealed class RamOnlyDestination(MachineDescription description) : IMigrationDestination
    {
        public GuestMemory Memory { get; } = GuestMemory.Allocate(X86Layout.RamRanges(Math.Min(description.MemoryBytes, MaxRamBytes)));
        public void Restore(MachineState state) { }
        public void Dispose() => Memory.Dispose();
    }

    /// <summary>The input to read; what the receiver answers goes nowhere.</summary>
    internal sealed class InputStream(byte[] input) : Stream
    {
        private readonly MemoryStream _input = new(input, writable: false);
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => _input.Read(buffer, offset, count);
        public override int Read(Span<byte> buffer) => _input.Read(buffer);
        public override void Write(byte[] buffer, int offset, int count) { }
        public override void Write(ReadOnlySpan<byte> buffer) { }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
