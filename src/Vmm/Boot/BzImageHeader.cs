using System.Buffers.Binary;

namespace Vmm.Boot;

/// <summary>The parts of a bzImage's real-mode setup header that a 64-bit loader needs
/// (Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header").</summary>
public sealed class BzImageHeader
{
    public const int SetupHeaderOffset = 0x1f1;
    public const ushort MinimumProtocol = 0x020a; // 2.10: init_size and pref_address
    private const uint HdrSMagic = 0x53726448; // "HdrS"
    private const byte LoadedHigh = 0x01;
    private const ushort XlfKernel64 = 0x01;

    public required ushort ProtocolVersion { get; init; }
    public required int SetupSectors { get; init; }
    public required bool Relocatable { get; init; }
    public required bool Has64BitEntry { get; init; }
    public required uint InitrdAddressMax { get; init; }
    public required uint CommandLineMaxBytes { get; init; }
    public required ulong PreferredLoadAddress { get; init; }
    public required uint InitSizeBytes { get; init; }
    /// <summary>The setup header exactly as in the file (0x1f1 to its end), copied into the zero page.</summary>
    public required byte[] SetupHeaderBytes { get; init; }

    /// <summary>File offset of the protected-mode kernel, which is loaded into guest RAM as is.</summary>
    public long ProtectedModeOffset => (SetupSectors + 1) * 512L;

    public static bool LooksLikeBzImage(ReadOnlySpan<byte> start) =>
        start.Length >= 0x206 && BinaryPrimitives.ReadUInt16LittleEndian(start[0x1fe..]) == 0xaa55
        && BinaryPrimitives.ReadUInt32LittleEndian(start[0x202..]) == HdrSMagic;

    /// <summary>Parses the header from the first bytes of the file (at least the first 1 KiB).</summary>
    public static BzImageHeader Parse(ReadOnlySpan<byte> start, long fileLength, string path)
    {
        if (!LooksLikeBzImage(start))
            throw new BootException($"{path}: no Linux setup header (boot flag 0xAA55 and 'HdrS' magic)");
        if (start.Length < 0x268)
            throw new BootException($"{path}: truncated setup header");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(start[0x206..]);
        if (version < MinimumProtocol)
            throw new BootException($"{path}: boot protocol {version >> 8}.{version & 0xff:d2} is older than 2.10 (Linux 2.6.31); vmm cannot load it");
        byte loadFlags = start[0x211];
        if ((loadFlags & LoadedHigh) == 0)
            throw new BootException($"{path}: a zImage (loaded low) is not supported; build a bzImage");
        int setupSectors = start[SetupHeaderOffset] == 0 ? 4 : start[SetupHeaderOffset];
        long protectedModeOffset = (setupSectors + 1) * 512L;
        if (protectedModeOffset >= fileLength)
            throw new BootException($"{path}: setup claims {setupSectors} sectors but the file has only {fileLength} bytes");
        int headerEnd = 0x202 + start[0x201];
        if (headerEnd > start.Length || headerEnd < 0x268)
            throw new BootException($"{path}: setup header length byte (0x{start[0x201]:x2}) is invalid");
        // syssize: the protected-mode kernel's size in 16-byte units. A file shorter than that was cut off (a
        // partial download or copy); loaded anyway, the guest would crash somewhere in its decompressor.
        long kernelBytes = BinaryPrimitives.ReadUInt32LittleEndian(start[0x1f4..]) * 16L;
        if (kernelBytes > fileLength - protectedModeOffset)
            throw new BootException($"{path} is truncated: its setup header says the kernel after the {protectedModeOffset}-byte setup is {kernelBytes} bytes, but the file holds {fileLength - protectedModeOffset}");
        return new BzImageHeader
        {
            ProtocolVersion = version,
            SetupSectors = setupSectors,
            Relocatable = start[0x234] != 0,
            Has64BitEntry = version >= 0x020c && (BinaryPrimitives.ReadUInt16LittleEndian(start[0x236..]) & XlfKernel64) != 0,
            InitrdAddressMax = BinaryPrimitives.ReadUInt32LittleEndian(start[0x22c..]),
            CommandLineMaxBytes = BinaryPrimitives.ReadUInt32LittleEndian(start[0x238..]),
            PreferredLoadAddress = BinaryPrimitives.ReadUInt64LittleEndian(start[0x258..]),
            InitSizeBytes = BinaryPrimitives.ReadUInt32LittleEndian(start[0x260..]),
            SetupHeaderBytes = start[SetupHeaderOffset..headerEnd].ToArray(),
        };
    }
}
