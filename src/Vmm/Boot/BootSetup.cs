using Vmm.Arch;

namespace Vmm.Boot;

/// <summary>What the loader put into guest memory, and where the vCPU must start.</summary>
public sealed record BootSetup(
    ulong EntryAddress,
    KernelEntryMode EntryMode,
    ulong ZeroPageAddress,
    ulong KernelStart,
    ulong KernelEnd,
    ulong InitrdAddress,
    ulong InitrdSizeBytes,
    string CommandLine);
