using System.Globalization;

namespace Vmm.Memory;

/// <summary>Parses sizes such as <c>512M</c>, <c>2G</c>, <c>1048576</c> (bytes) or <c>64KiB</c>.</summary>
public static class MemorySize
{
    public static bool TryParse(string? text, out ulong bytes, out string error)
    {
        bytes = 0;
        error = "";
        string s = (text ?? "").Trim();
        if (s.Length == 0)
        {
            error = "empty size";
            return false;
        }
        int digits = 0;
        while (digits < s.Length && char.IsAsciiDigit(s[digits])) digits++;
        if (digits == 0 || !ulong.TryParse(s.AsSpan(0, digits), NumberStyles.None, CultureInfo.InvariantCulture, out ulong number))
        {
            error = $"'{text}' is not a size: expected a number with an optional unit, like 512M or 2G";
            return false;
        }
        int shift;
        switch (s[digits..].ToUpperInvariant())
        {
            case "": case "B": shift = 0; break;
            case "K": case "KB": case "KIB": shift = 10; break;
            case "M": case "MB": case "MIB": shift = 20; break;
            case "G": case "GB": case "GIB": shift = 30; break;
            case "T": case "TB": case "TIB": shift = 40; break;
            default:
                error = $"'{text}' has an unknown unit '{s[digits..]}': use K, M, G or T (powers of 1024)";
                return false;
        }
        if (number > ulong.MaxValue >> shift)
        {
            error = $"'{text}' is too large";
            return false;
        }
        bytes = number << shift;
        return true;
    }
}
