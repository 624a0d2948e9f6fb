using Vmm.Devices.Virtio;
using Vmm.Migration;
using Vmm.Tests.Devices.Virtio;
using Xunit;

namespace Vmm.Tests.Migration;

/// <summary>A disk image copied pass by pass (<see cref="DiskCopySender"/> into <see cref="IncomingDiskImages"/>)
/// while a driver writes, discards and zeroes through the virtio-blk device at a set rate: at the pause, after the
/// last pass, the copy is byte-identical to the image, and the image's holes (and runs of zeros) are holes.</summary>
public sealed class DiskCopyTests : IDisposable
{
    private const long ImageBytes = 16L << 20;
    /// <summary>The driver writes only below this; above it the image keeps what it started with.</summary>
    private const long WrittenBelow = 6L << 20;
    private const int Sector = VirtioBlock.SectorBytes;
    private readonly string _directory = Directory.CreateTempSubdirectory("vmm-diskcopy-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void WhileADriverWrites_TheCopyAtThePauseIsByteIdentical_AndHolesStayHoles()
    {
        string sourcePath = Path.Combine(_directory, "source", "disk.img");
        string targetDirectory = Path.Combine(_directory, "target");
        Directory.CreateDirectory(Path.GetDirectoryName(sourcePath)!);
        Directory.CreateDirectory(targetDirectory);
        DiskImageFiles.CreateSparse(sourcePath, ImageBytes,
            (1L << 20, VirtioBlockHarness.Pattern(2 << 20, seed: 2)),
            (8L << 20, VirtioBlockHarness.Pattern(64 << 10, seed: 3)),
            (12L << 20, new byte[1 << 20])); // allocated, but zeros: the copy need not allocate it
        using var blk = VirtioBlockHarness.Open(sourcePath);
        blk.Start();
        using var images = IncomingDiskImages.Create(targetDirectory, [blk.Device.Config], [ImageBytes]);
        var wire = new MemoryStream();
        using var sending = new FrameWriter([new MigrationChannel(wire)]);

        using var writer = new RateWriter(blk);
        using (var sender = new DiskCopySender([blk.Device]))
        {
            sender.SendAllocated(sending);
            sending.Drain();
            Deliver(wire, images);
            for (int pass = 2; pass <= 4; pass++)
            {
                // Certain, not hoped for: the driver has written since the last take.
                writer.WaitForMoreRequests(20);
                Assert.True(sender.CollectDirty() > 0, $"nothing dirty before pass {pass}");
                sender.SendPending(sending);
                sending.Drain();
                Deliver(wire, images);
            }
            writer.Stop(); // the pause: no request runs any more
            sender.CollectDirty();
            sender.SendPending(sending);
            sending.Drain();
            Deliver(wire, images);
        }
        images.Commit();
        images.Keep();

        string copy = Path.Combine(targetDirectory, "disk.img");
        Assert.True(writer.Requests >= 60, $"the driver made {writer.Requests} requests");
        Assert.Equal(File.ReadAllBytes(sourcePath), File.ReadAllBytes(copy));
        // The copy holds data only where the image does, and not where the image holds allocated zeros.
        Assert.False(DiskImageFiles.HasData(copy, WrittenBelow, 8L << 20));
        Assert.True(DiskImageFiles.HasData(copy, 8L << 20, (8L << 20) + (64 << 10)));
        Assert.False(DiskImageFiles.HasData(copy, (8L << 20) + (64 << 10), ImageBytes));
        Assert.True(DiskImageFiles.HasData(sourcePath, 12L << 20, 13L << 20));
    }

    /// <summary>Plays the target's receiver for what the sender wrote so far.</summary>
    private static void Deliver(MemoryStream wire, IncomingDiskImages images)
    {
        wire.Position = 0;
        var receiving = new MigrationChannel(wire);
        byte[] buffer = new byte[1 << 20];
        while (wire.Position < wire.Length)
        {
            var (type, payload) = receiving.Receive(ref buffer);
            if (type == MigrationFrameType.DiskData) images.WriteData(payload.Span);
            else if (type == MigrationFrameType.DiskZero) images.WriteZero(payload.Span);
            else throw new InvalidOperationException($"unexpected {type} frame");
        }
        wire.SetLength(0);
    }

    /// <summary>A driver thread: a write of 1 to 120 sectors, every tenth request a discard or write-zeroes of
    /// up to 128 KiB, below <see cref="WrittenBelow"/>, one request per millisecond.</summary>
    private sealed class RateWriter : IDisposable
    {
        private readonly VirtioBlockHarness _blk;
        private readonly Thread _thread;
        private volatile bool _stop;
        private int _requests;
        private Exception? _failure;

        public RateWriter(VirtioBlockHarness blk)
        {
            _blk = blk;
            _thread = new Thread(Run) { IsBackground = true };
            _thread.Start();
        }

        public int Requests => Volatile.Read(ref _requests);

        private void Run()
        {
            var random = new Random(7);
            try
            {
                for (int n = 0; !_stop; n++)
                {
                    long sector = random.NextInt64(WrittenBelow / Sector - 256);
                    byte status;
                    if (n % 10 == 9)
                    {
                        uint type = n % 20 == 19 ? VirtioBlock.RequestDiscard : VirtioBlock.RequestWriteZeroes;
                        status = _blk.Request(type, (ulong)sector, range: (uint)random.Next(1, 257));
                    }
                    else
                    {
                        byte[] data = new byte[random.Next(1, 121) * Sector];
                        random.NextBytes(data);
                        status = _blk.Request(VirtioBlock.RequestOut, (ulong)sector, data: data);
                    }
                    if (status != VirtioBlock.StatusOk) throw new InvalidOperationException($"request {n} answered {status}");
                    Interlocked.Increment(ref _requests);
                    Thread.Sleep(1);
                }
            }
            catch (Exception e)
            {
                _failure = e;
            }
        }

        public void WaitForMoreRequests(int count)
        {
            int target = Requests + count;
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (Requests < target)
            {
                if (_failure is not null) throw new InvalidOperationException("the driver failed", _failure);
                if (waited.Elapsed > TimeSpan.FromMinutes(1)) throw new TimeoutException($"the driver made {Requests} requests");
                Thread.Sleep(1);
            }
        }

        public void Stop()
        {
            _stop = true;
            _thread.Join();
            if (_failure is not null) throw new InvalidOperationException("the driver failed", _failure);
        }

        public void Dispose()
        {
            _stop = true;
            _thread.Join();
        }
    }
}
