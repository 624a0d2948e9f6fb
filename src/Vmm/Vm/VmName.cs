using System.Text;

namespace Vmm.Vm;

/// <summary>A VM's name: how tools find it (its control socket and console log can be named after it, also after
/// it moves to another host). It ends up in file names, so it is 1 to 64 letters, digits, '.', '_' or '-',
/// starting with a letter or digit.</summary>
public static class VmName
{
    public const int MaxLength = 64;
    private const int StemLength = 40;

    public static bool IsValid(string name) =>
        name.Length is > 0 and <= MaxLength && char.IsAsciiLetterOrDigit(name[0]) && name.All(IsAllowed);

    private static bool IsAllowed(char c) => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-';

    public static string Check(string name, string what) => IsValid(name) ? name
        : throw new ConfigurationException($"{what} '{name}' is not a VM name: 1 to {MaxLength} letters, digits, '.', '_' or '-', starting with a letter or digit");

    /// <summary>A name for a VM started without one: the file name it was made from (kernel, snapshot or first
    /// disk), without its extension, and a short random suffix that keeps two such VMs apart.</summary>
    public static string Derive(string? fromPath)
    {
        string stem = fromPath is null ? "" : Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(fromPath));
        var text = new StringBuilder();
        foreach (char c in stem)
        {
            if (text.Length == StemLength) break;
            text.Append(IsAllowed(c) ? c : '-');
        }
        string cleaned = text.ToString().TrimStart('.', '_', '-');
        return $"{(cleaned.Length > 0 ? cleaned : "vm")}-{Convert.ToHexStringLower(BitConverter.GetBytes(Random.Shared.Next())[..3])}";
    }

    /// <summary>Replaces <c>{name}</c> in a path template (a daemon's --api-socket or --serial-log).</summary>
    public static string Expand(string template, string name) => template.Replace("{name}", name);
}
