using System.Net.Sockets;

namespace Vmm.Cli;

/// <summary>A control socket named by an option: one that cannot be served (its directory not writable, the path taken
/// by something else) is a configuration error that names the option.</summary>
internal static class SocketOption
{
    public static T Start<T>(string option, string path, Func<string, T> start)
    {
        try
        {
            return start(path);
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException)
        {
            throw new ConfigurationException($"{option} {path}: {e.Message}");
        }
    }
}
