using Vmm.State;

namespace Vmm.Migration;

/// <summary>What a target builds for an incoming migration: the VM's name, its machine (with the disks at their
/// paths on this host), and, where the disk images are being copied, where each is opened while it arrives
/// (its path exists only once the copy is complete).</summary>
public sealed record IncomingMachine(string Name, MachineDescription Description, IReadOnlyList<string>? DiskImagesOpenedAt);
