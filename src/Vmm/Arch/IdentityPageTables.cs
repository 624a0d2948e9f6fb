using Vmm.Memory;

namespace Vmm.Arch;

/// <summary>Page tables that identity-map the first 4 GiB with 2 MiB pages: the 64-bit boot protocol
/// needs the kernel, the zero page and the command line mapped 1:1 when it jumps to the kernel.</summary>
public static class IdentityPageTables
{
    private const ulong Present = 1, Writable = 2, PageSize2M = 0x80;

    public static void Write(GuestMemory memory)
    {
        memory.Write(X86Layout.Pml4Address, X86Layout.PdptAddress | Present | Writable);
        for (int gib = 0; gib < X86Layout.IdentityMappedGiB; gib++)
        {
            ulong directory = X86Layout.PageDirectoriesAddress + (ulong)gib * 4096;
            memory.Write(X86Layout.PdptAddress + (ulong)gib * 8, directory | Present | Writable);
            for (int i = 0; i < 512; i++)
            {
                ulong physical = ((ulong)gib << 30) + ((ulong)i << 21);
                memory.Write(directory + (ulong)i * 8, physical | Present | Writable | PageSize2M);
            }
        }
    }
}
