using System.Text;
using Microsoft.Win32.SafeHandles;
using Vmm.Arch;
using Vmm.Memory;

namespace Vmm.Boot;

/// <summary>The Linux x86 boot protocol: puts a bzImage or an ELF vmlinux, an initramfs, the command line
/// and the zero page into guest memory. File contents go straight into guest RAM, never through a
/// second full copy in the VMM's heap.</summary>
public static class LinuxLoader
{
    private const int HeaderReadBytes = 64 * 1024;
    private const ulong PageSize = 4096;
    private const ulong LegacyLoadAddress = 0x100000;
    /// <summary>Linux's own default for kernels that do not say (Documentation/arch/x86/boot.rst).</summary>
    private const uint DefaultInitrdAddressMax = 0x7fff_ffff;
    /// <summary>COMMAND_LINE_SIZE on x86 when the kernel does not give cmdline_size.</summary>
    private const uint DefaultCommandLineMaxBytes = 2048;

    public static BootSetup Load(GuestMemory memory, string kernelPath, string? initrdPath, string commandLine)
    {
        using SafeFileHandle kernel = OpenInput(kernelPath, "kernel");
        long kernelLength = RandomAccess.GetLength(kernel);
        byte[] start = ReadAt(kernel, 0, (int)Math.Min(kernelLength, HeaderReadBytes), kernelPath);

        BootParams bootParams;
        ulong entry, kernelStart, kernelEnd;
        KernelEntryMode mode;
        uint initrdAddressMax, commandLineMaxBytes;

        if (BzImageHeader.LooksLikeBzImage(start))
        {
            var header = BzImageHeader.Parse(start, kernelLength, kernelPath);
            kernelStart = header.PreferredLoadAddress != 0 ? header.PreferredLoadAddress : LegacyLoadAddress;
            ulong imageBytes = (ulong)(kernelLength - header.ProtectedModeOffset);
            kernelEnd = kernelStart + Math.Max(imageBytes, header.InitSizeBytes);
            RequireRam(memory, kernelStart, kernelEnd, "the kernel (its decompressor needs init_size bytes from its load address)");
            CopyFileToGuest(kernel, header.ProtectedModeOffset, imageBytes, memory, kernelStart, kernelPath);
            mode = header.Has64BitEntry ? KernelEntryMode.Long64 : KernelEntryMode.Protected32;
            // The 64-bit entry point sits 0x200 past the 32-bit one (boot.rst, "64-bit BOOT PROTOCOL").
            entry = mode == KernelEntryMode.Long64 ? kernelStart + 0x200 : kernelStart;
            initrdAddressMax = header.InitrdAddressMax;
            commandLineMaxBytes = header.CommandLineMaxBytes;
            bootParams = BootParams.FromSetupHeader(header.SetupHeaderBytes, (uint)kernelStart);
        }
        else if (ElfKernelImage.LooksLikeElf(start))
        {
            var image = ElfKernelImage.Parse(start, kernelLength, (offset, count) => ReadAt(kernel, offset, count, kernelPath), kernelPath);
            foreach (var segment in image.Segments)
            {
                RequireRam(memory, segment.PhysicalAddress, segment.PhysicalAddress + segment.MemorySizeBytes, "the kernel's segments");
                CopyFileToGuest(kernel, segment.FileOffset, segment.FileSizeBytes, memory, segment.PhysicalAddress, kernelPath);
                memory.Fill(segment.PhysicalAddress + segment.FileSizeBytes, segment.MemorySizeBytes - segment.FileSizeBytes, 0);
            }
            kernelStart = image.LowestAddress;
            kernelEnd = image.EndAddress;
            entry = image.EntryPhysicalAddress;
            mode = KernelEntryMode.Long64;
            initrdAddressMax = DefaultInitrdAddressMax;
            commandLineMaxBytes = DefaultCommandLineMaxBytes;
            bootParams = BootParams.Synthesized(commandLineMaxBytes);
        }
        else
        {
            throw new BootException($"{kernelPath} is not a Linux kernel: it is neither a bzImage (no 'HdrS' setup header) nor an ELF vmlinux");
        }
        if (kernelStart < X86Layout.HighMemoryAddress)
            throw new BootException($"{kernelPath}: the kernel wants to load at 0x{kernelStart:x}, below 1 MiB, where vmm keeps the boot structures");

        WriteCommandLine(memory, bootParams, commandLine, Math.Min(commandLineMaxBytes, (uint)X86Layout.CommandLineMaxBytes - 1));

        ulong initrdAddress = 0, initrdBytes = 0;
        if (initrdPath is not null)
            (initrdAddress, initrdBytes) = LoadInitrd(memory, bootParams, initrdPath, initrdAddressMax, kernelEnd);

        bootParams.SetE820(E820Entry.MapFor(memory.Regions.Select(r => (r.GuestAddress, r.SizeBytes)).ToList()));
        memory.Write(X86Layout.ZeroPageAddress, bootParams.Bytes);
        return new BootSetup(entry, mode, X86Layout.ZeroPageAddress, kernelStart, kernelEnd, initrdAddress, initrdBytes, commandLine);
    }

    private static void WriteCommandLine(GuestMemory memory, BootParams bootParams, string commandLine, uint maxBytes)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(commandLine);
        if (bytes.Length > maxBytes)
            throw new BootException($"the kernel command line is {bytes.Length} bytes; this kernel accepts at most {maxBytes}");
        if (Array.IndexOf(bytes, (byte)0) >= 0)
            throw new BootException("the kernel command line contains a NUL character");
        memory.Write(X86Layout.CommandLineAddress, bytes);
        memory.Write<byte>(X86Layout.CommandLineAddress + (ulong)bytes.Length, 0);
        bootParams.SetCommandLine(X86Layout.CommandLineAddress);
    }

    /// <summary>Puts the initramfs as high as allowed in low RAM (where the kernel looks first and where it
    /// stays clear of the decompressing kernel), page aligned, never overlapping the kernel.</summary>
    private static (ulong Address, ulong SizeBytes) LoadInitrd(GuestMemory memory, BootParams bootParams, string path, uint initrdAddressMax, ulong kernelEnd)
    {
        using SafeFileHandle file = OpenInput(path, "initramfs");
        ulong sizeBytes = (ulong)RandomAccess.GetLength(file);
        if (sizeBytes == 0) throw new BootException($"initramfs {path} is empty");
        ulong lowRamEnd = memory.Regions.Where(r => r.GuestAddress == 0).Select(r => r.EndAddress).Single();
        ulong limit = Math.Min((ulong)initrdAddressMax + 1, lowRamEnd);
        ulong address = sizeBytes <= limit ? (limit - sizeBytes) & ~(PageSize - 1) : 0;
        if (sizeBytes > limit || address < kernelEnd)
            throw new BootException(
                $"initramfs {path} ({sizeBytes >> 10} KiB) does not fit between the kernel's end (0x{kernelEnd:x}) and 0x{limit:x}: give the guest more memory (--memory)");
        CopyFileToGuest(file, 0, sizeBytes, memory, address, path);
        bootParams.SetInitrd(address, sizeBytes);
        return (address, sizeBytes);
    }

    private static void RequireRam(GuestMemory memory, ulong start, ulong end, string what)
    {
        if (!memory.IsRam(start, end - start))
            throw new BootException($"{what} need guest RAM from 0x{start:x} to 0x{end:x} ({(end + (1 << 20) - 1) >> 20} MiB); give the guest more memory (--memory)");
    }

    private static SafeFileHandle OpenInput(string path, string what)
    {
        try
        {
            if (Directory.Exists(path)) throw new BootException($"{what} {path} is a directory, not a file");
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        }
        catch (FileNotFoundException) { throw new BootException($"{what} file {path} does not exist"); }
        catch (DirectoryNotFoundException) { throw new BootException($"{what} file {path} does not exist"); }
        catch (UnauthorizedAccessException) { throw new BootException($"{what} file {path} cannot be read (permission denied)"); }
        catch (IOException e) { throw new BootException($"{what} file {path} cannot be read: {e.Message}", e); }
    }

    private static byte[] ReadAt(SafeFileHandle file, long offset, int count, string path)
    {
        byte[] buffer = new byte[count];
        ReadExactly(file, offset, buffer, path);
        return buffer;
    }

    private static void CopyFileToGuest(SafeFileHandle file, long offset, ulong count, GuestMemory memory, ulong address, string path)
    {
        const int ChunkBytes = 1 << 30;
        while (count > 0)
        {
            int chunk = (int)Math.Min(count, ChunkBytes);
            ReadExactly(file, offset, memory.GetSpan(address, chunk), path);
            offset += chunk;
            address += (ulong)chunk;
            count -= (ulong)chunk;
        }
    }

    private static void ReadExactly(SafeFileHandle file, long offset, Span<byte> destination, string path)
    {
        while (!destination.IsEmpty)
        {
            int read;
            try { read = RandomAccess.Read(file, destination, offset); }
            catch (IOException e) { throw new BootException($"{path} cannot be read: {e.Message}", e); }
            if (read == 0) throw new BootException($"{path} ended early: it is truncated");
            destination = destination[read..];
            offset += read;
        }
    }
}
