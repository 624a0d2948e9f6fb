using Vmm.Vm;

namespace Vmm.Migration;

/// <summary>A VM a <see cref="MigrationDaemon"/> took in and runs: its name, the migration that brought it (the
/// daemon's connection number), and where its control socket is.</summary>
public sealed record ReceivedVm(string Name, int Migration, Machine Machine, Task<VmStop> Run, IDisposable? Control, string? ApiSocket, Stream? SerialLog);
