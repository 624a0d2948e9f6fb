using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Vmm.Cli;

/// <summary><c>vmm ctl</c>: one request to a VM's control socket. Exit code 0 when the VM did it, 1 when
/// it answered with an error, 2 when there was no VM to ask.</summary>
public static class CtlCommand
{
    public static int Execute(CtlOptions options)
    {
        string request = JsonSerializer.Serialize(options.Command, CtlJsonContext.Default.String);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(options.Socket));
        }
        catch (SocketException e)
        {
            Console.Error.WriteLine($"vmm: error: cannot reach the control socket {options.Socket}: {e.Message} (is the VM running with --api-socket?)");
            return 2;
        }
        using var stream = new NetworkStream(socket);
        stream.Write(Encoding.UTF8.GetBytes($"{{\"command\":{request}}}\n"));
        using var reader = new StreamReader(stream, Encoding.UTF8);
        string? answer = reader.ReadLine();
        if (answer is null)
        {
            Console.Error.WriteLine("vmm: error: the VM closed the control socket without answering");
            return 2;
        }
        Console.Out.WriteLine(answer);
        using var document = JsonDocument.Parse(answer);
        return document.RootElement.TryGetProperty("ok", out var ok) && ok.ValueKind == JsonValueKind.True ? 0 : 1;
    }
}
