namespace Vmm.Fuzz;

/// <summary>Every fuzz target, by name.</summary>
public static class FuzzTargets
{
    public static readonly IReadOnlyList<IFuzzTarget> All =
    [
        new VirtqueueTarget(),
        new MigrationStreamTarget(),
        new StandbyStreamTarget(),
        new StateTarget(),
        new KernelImageTarget(KernelImageTarget.Format.BzImage),
        new KernelImageTarget(KernelImageTarget.Format.Elf),
        new OptionsTarget(),
        new ConfigFileTarget(),
    ];

    public static IFuzzTarget? Find(string name) => All.FirstOrDefault(t => t.Name == name);
}
