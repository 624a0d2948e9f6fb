using System.Globalization;

namespace Vmm.Devices.Virtio;

/// <summary>One <c>--net tap=NAME[,mac=XX:XX:XX:XX:XX:XX]</c>.</summary>
public sealed record NetworkConfig(string TapName, byte[] Mac)
{
    /// <summary>IFNAMSIZ - 1: the kernel's limit on an interface name.</summary>
    public const int MaxTapNameBytes = 15;

    public static bool TryParse(string text, out NetworkConfig? network, out string error)
    {
        network = null;
        error = "";
        string? tap = null;
        byte[]? mac = null;
        foreach (string part in text.Split(','))
        {
            if (part.StartsWith("tap=", StringComparison.Ordinal) && part.Length > 4) tap = part[4..];
            else if (part.StartsWith("mac=", StringComparison.Ordinal))
            {
                mac = TryParseMac(part[4..]);
                if (mac is null)
                {
                    error = $"--net '{text}': '{part[4..]}' is not a unicast MAC address like 02:00:00:00:00:01";
                    return false;
                }
            }
            else
            {
                error = $"--net '{text}': unknown option '{part}' (expected tap=NAME[,mac=XX:XX:XX:XX:XX:XX])";
                return false;
            }
        }
        if (tap is null)
        {
            error = $"--net '{text}': tap=NAME is missing";
            return false;
        }
        network = new NetworkConfig(tap, mac ?? GenerateMac());
        return true;
    }

    /// <summary>A random locally administered unicast address (first octet 0x02 bit set, 0x01 bit clear).</summary>
    public static byte[] GenerateMac()
    {
        byte[] mac = new byte[6];
        Random.Shared.NextBytes(mac);
        mac[0] = (byte)((mac[0] & 0xfc) | 0x02);
        return mac;
    }

    public static string Format(ReadOnlySpan<byte> mac) => string.Join(':', mac.ToArray().Select(b => b.ToString("x2")));

    /// <summary>A unicast MAC address written as six hex octets, <c>02:00:00:00:00:01</c>; null when it is not one.</summary>
    public static byte[]? TryParseMac(string text)
    {
        string[] octets = text.Split(':');
        if (octets.Length != 6) return null;
        byte[] mac = new byte[6];
        for (int i = 0; i < 6; i++)
            if (octets[i].Length != 2 || !byte.TryParse(octets[i], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out mac[i])) return null;
        return (mac[0] & 1) == 0 ? mac : null;
    }
}
