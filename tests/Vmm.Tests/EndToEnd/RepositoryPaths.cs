namespace Vmm.Tests.EndToEnd;

/// <summary>Finds the repository (the directory holding Vmm.sln) and the built vmm CLI from the test binaries.</summary>
internal static class RepositoryPaths
{
    public static string Root { get; } = FindRoot();

    /// <summary>The vmm CLI built next to the tests (the test project references it).</summary>
    public static string VmmDll => Path.Combine(AppContext.BaseDirectory, "vmm.dll");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Vmm.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no Vmm.sln above {AppContext.BaseDirectory}");
    }
}
