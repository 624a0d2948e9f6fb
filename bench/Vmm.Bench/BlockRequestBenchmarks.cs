using BenchmarkDotNet.Attributes;
using Vmm.Devices.Virtio;
using Vmm.Memory;
using static Vmm.Devices.Virtio.SplitVirtqueueLayout;
using static Vmm.Bench.DescriptorTableWriter;

namespace Vmm.Bench;

/// <summary>virtio-blk requests per second, device model and host I/O together: per operation the driver
/// makes 64 requests available (16-byte header, one data buffer, status byte, each in three chained
/// descriptors) and the device runs them against a 64 MiB raw image in tmpfs (/dev/shm), so the figure
/// is the VMM's cost per request plus a page-cache copy, without disk latency. Reported per request.</summary>
[Config(typeof(OperationsPerSecondConfig))]
[MemoryDiagnoser]
public class BlockRequestBenchmarks
{
    public const int RequestsPerOperation = 64;
    private const ushort QueueSize = 256;
    private const long ImageBytes = 64L << 20;
    private const ulong DescriptorTableAddress = 0x10000, AvailableRingAddress = 0x20000, UsedRingAddress = 0x21000;
    private const ulong BuffersAddress = 0x100000;

    private string _image = "";
    private GuestMemory _memory = null!;
    private VirtioBlock _disk = null!;
    private ushort _availableIndex;
    private ulong _nextSector;

    [Params(VirtioBlock.RequestIn, VirtioBlock.RequestOut)]
    public uint RequestType { get; set; }

    [Params(512, 4096, 65536)]
    public int DataBytes { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _image = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), $"vmm-bench-{Environment.ProcessId}.img");
        using (var file = File.Create(_image)) file.SetLength(ImageBytes);
        _memory = GuestMemory.Allocate([(0, 32UL << 20)]);
        for (int request = 0; request < RequestsPerOperation; request++)
        {
            ulong header = BuffersAddress + (ulong)request * 0x20000;
            ulong data = header + 0x1000;
            ulong status = data + (ulong)DataBytes;
            _memory.Write(header, RequestType);
            bool toGuest = RequestType == VirtioBlock.RequestIn;
            int first = 3 * request;
            Write(_memory, DescriptorTableAddress, first, header, 16, FlagNext, (ushort)(first + 1));
            Write(_memory, DescriptorTableAddress, first + 1, data, (uint)DataBytes, (ushort)(FlagNext | (toGuest ? FlagWrite : 0)), (ushort)(first + 2));
            Write(_memory, DescriptorTableAddress, first + 2, status, 1, FlagWrite, 0);
        }
        for (int slot = 0; slot < QueueSize; slot++)
            _memory.Write(AvailableRingAddress + AvailableRingOffset + 2UL * (ulong)slot, (ushort)(slot % RequestsPerOperation * 3));

        var queue = new Virtqueue(QueueSize)
        {
            DescriptorTableAddress = DescriptorTableAddress,
            AvailableRingAddress = AvailableRingAddress,
            UsedRingAddress = UsedRingAddress,
            EventIdxEnabled = true,
        };
        queue.Validate(_memory);
        queue.Ready = true;
        _disk = new VirtioBlock(new BlockDiskConfig(_image, ReadOnly: false, Id: null));
        _disk.Activate(new VirtioActivation(_disk.OfferedFeatures, [queue], _memory, () => { }));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _disk.Dispose();
        _memory.Dispose();
        File.Delete(_image);
    }

    [Benchmark(OperationsPerInvoke = RequestsPerOperation)]
    public void RunRequests()
    {
        // Sequential sectors across the image, wrapping.
        ulong sectorsPerRequest = (ulong)DataBytes / VirtioBlock.SectorBytes;
        for (int request = 0; request < RequestsPerOperation; request++)
        {
            if ((_nextSector + sectorsPerRequest) * VirtioBlock.SectorBytes > ImageBytes) _nextSector = 0;
            _memory.Write(BuffersAddress + (ulong)request * 0x20000 + 8, _nextSector);
            _nextSector += sectorsPerRequest;
        }
        _availableIndex += RequestsPerOperation;
        _memory.Write(AvailableRingAddress + AvailableIndexOffset, _availableIndex);
        _disk.ProcessQueue(0);
    }
}
