namespace Vmm.Devices.Virtio;

/// <summary>One <c>--disk PATH[,ro][,id=NAME]</c>.</summary>
public sealed record BlockDiskConfig(string Path, bool ReadOnly, string? Id)
{
    public const int MaxIdBytes = 20; // VIRTIO_BLK_ID_BYTES

    public static bool TryParse(string text, out BlockDiskConfig? disk, out string error)
    {
        disk = null;
        error = "";
        string[] parts = text.Split(',');
        if (parts[0].Length == 0)
        {
            error = $"--disk '{text}': the image path is missing (expected PATH[,ro][,id=NAME])";
            return false;
        }
        bool readOnly = false;
        string? id = null;
        foreach (string part in parts.Skip(1))
        {
            if (part == "ro") readOnly = true;
            else if (part.StartsWith("id=", StringComparison.Ordinal) && part.Length > 3)
            {
                id = part[3..];
                if (System.Text.Encoding.UTF8.GetByteCount(id) > MaxIdBytes)
                {
                    error = $"--disk '{text}': id '{id}' is longer than {MaxIdBytes} bytes";
                    return false;
                }
            }
            else
            {
                error = $"--disk '{text}': unknown option '{part}' (expected ro or id=NAME)";
                return false;
            }
        }
        disk = new BlockDiskConfig(parts[0], readOnly, id);
        return true;
    }
}
