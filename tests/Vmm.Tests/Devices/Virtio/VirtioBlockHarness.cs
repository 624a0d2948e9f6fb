using System.Buffers.Binary;
using Vmm.Devices.Virtio;
using Vmm.Diagnostics;
using Vmm.Memory;

namespace Vmm.Tests.Devices.Virtio;

/// <summary>A virtio-blk device over a temporary image file, behind a virtio-mmio transport, with an
/// <see cref="MmioDriver"/> playing Linux's virtio_blk: requests are posted as header / data / status
/// chains in numbered slots of guest memory (slot k at <see cref="SlotAddress"/>(k): the 16-byte header
/// at +0, the status byte at +0xf00, data pages from +0x1000).</summary>
internal sealed class VirtioBlockHarness : IDisposable
{
    public const ushort QueueSize = 64;
    public const ulong MemoryBytes = 4UL << 20;
    private const ulong FirstSlotAddress = 0x100000, SlotBytes = 0x10000, StatusOffset = 0xf00, DataOffset = 0x1000;
    public const byte StatusNotWritten = 0xff;

    private readonly DirectoryInfo? _directory;

    private VirtioBlockHarness(DirectoryInfo? directory, string path, VirtioBlock device)
    {
        _directory = directory;
        ImagePath = path;
        Device = device;
        Memory = GuestMemory.Allocate([(0, MemoryBytes)]);
        Transport = new VirtioMmioTransport("virtio-blk0", device, Memory, Interrupt, new Logger(Log, LogLevel.Debug));
        Driver = new MmioDriver(Transport, Memory);
    }

    public string ImagePath { get; }
    public VirtioBlock Device { get; }
    public GuestMemory Memory { get; }
    public StringWriter Log { get; } = new();
    public CountingInterruptLine Interrupt { get; } = new();
    public VirtioMmioTransport Transport { get; }
    public MmioDriver Driver { get; }
    /// <summary>The request queue's ring that <see cref="Post(int, uint, ulong, uint[])"/> uses: set by
    /// <see cref="Start"/>, or by a test that sets the queue up itself.</summary>
    public SplitRingDriver Ring { get; set; } = null!;

    public static VirtioBlockHarness Create(byte[] contents, bool readOnly = false, string? id = null, string fileName = "disk.img")
    {
        var directory = Directory.CreateTempSubdirectory("vmm-blk-");
        string path = Path.Combine(directory.FullName, fileName);
        File.WriteAllBytes(path, contents);
        try
        {
            return new VirtioBlockHarness(directory, path, new VirtioBlock(new BlockDiskConfig(path, readOnly, id)));
        }
        catch
        {
            directory.Delete(recursive: true);
            throw;
        }
    }

    /// <summary>Over an existing image, which stays where it is when the harness goes.</summary>
    public static VirtioBlockHarness Open(string path) => new(null, path, new VirtioBlock(new BlockDiskConfig(path, false, null)));

    /// <summary>One request in slot 0, run to completion (the kick is served at once), its descriptors given back:
    /// a write of <paramref name="data"/>, or a discard or write-zeroes of <paramref name="range"/> sectors.
    /// Returns its status.</summary>
    public byte Request(uint type, ulong sector, byte[]? data = null, uint range = 0)
    {
        ushort head;
        if (data is not null)
        {
            Memory.Write(DataAddress(0, 0), data);
            head = Post(0, type, sector, (uint)data.Length);
        }
        else
        {
            Span<byte> entry = stackalloc byte[16];
            entry.Clear();
            BinaryPrimitives.WriteUInt64LittleEndian(entry, sector);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[8..], range);
            Memory.Write(DataAddress(0, 0), entry);
            head = Post(0, type, 0, 16);
        }
        Driver.Kick(0);
        // The ring hands out free descriptors first in, first out, and each request takes and returns three:
        // they are always the head and the two after it.
        Ring.Recycle([head, (ushort)((head + 1) % Ring.Size), (ushort)((head + 2) % Ring.Size)]);
        return Status(0);
    }

    /// <summary>Deterministic pseudo-random image contents, different in every sector.</summary>
    public static byte[] Pattern(int bytes, int seed = 1)
    {
        var data = new byte[bytes];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>The whole initialization sequence with one request queue.</summary>
    public SplitRingDriver Start(ulong features = VirtioFeatures.Version1, ushort queueSize = QueueSize)
    {
        Ring = Driver.Initialize(features, queueSize)[0];
        return Ring;
    }

    public static ulong SlotAddress(int slot) => FirstSlotAddress + (ulong)slot * SlotBytes;
    public static ulong HeaderAddress(int slot) => SlotAddress(slot);
    public static ulong StatusAddress(int slot) => SlotAddress(slot) + StatusOffset;
    public static ulong DataAddress(int slot, int segment) => SlotAddress(slot) + DataOffset + (ulong)segment * 0x1000;

    /// <summary>Posts header + one data descriptor per length (device-writable for IN and GET_ID) + status
    /// in slot <paramref name="slot"/>; the status byte starts as <see cref="StatusNotWritten"/>.</summary>
    public ushort Post(int slot, uint type, ulong sector, params uint[] dataLengths)
    {
        bool deviceWrites = type is VirtioBlock.RequestIn or VirtioBlock.RequestGetId;
        var data = dataLengths.Select((length, i) => new DriverBuffer(DataAddress(slot, i), length, deviceWrites)).ToArray();
        return Post(type, sector, data, HeaderAddress(slot), StatusAddress(slot));
    }

    public ushort Post(uint type, ulong sector, IReadOnlyList<DriverBuffer> data, ulong headerAddress, ulong statusAddress)
    {
        WriteHeader(headerAddress, type, sector);
        Memory.Write(statusAddress, StatusNotWritten);
        var chain = new List<DriverBuffer> { new(headerAddress, 16, DeviceWritable: false) };
        chain.AddRange(data);
        chain.Add(new DriverBuffer(statusAddress, 1, DeviceWritable: true));
        return Ring.AddChain(chain);
    }

    /// <summary>struct virtio_blk_outhdr { le32 type; le32 reserved; le64 sector; }</summary>
    public void WriteHeader(ulong address, uint type, ulong sector)
    {
        Span<byte> header = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(header, type);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], sector);
        Memory.Write(address, header);
    }

    public byte Status(int slot) => Memory.Read<byte>(StatusAddress(slot));

    public byte[] ReadGuest(ulong address, int length)
    {
        var data = new byte[length];
        Memory.Read(address, data);
        return data;
    }

    public byte[] Image => File.ReadAllBytes(ImagePath);

    public void Dispose()
    {
        Device.Dispose();
        Memory.Dispose();
        _directory?.Delete(recursive: true);
    }
}
