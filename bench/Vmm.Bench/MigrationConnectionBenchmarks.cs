using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using BenchmarkDotNet.Attributes;
using Vmm.Migration;

namespace Vmm.Bench;

/// <summary>What mutual TLS costs a migration connection, apart from the guest and its memory: 64 full Pages
/// frames (64 MiB of random pages) and a pass end, sent over loopback TCP and answered with the pass-done
/// frame by a receiving thread, plain and over TLS (the handshake is done once, in the setup). Both ends share
/// the machine's cores, as they do in bench/migration.sh. Reported per 64 MiB.</summary>
[Config(typeof(OperationsPerSecondConfig))]
public class MigrationConnectionBenchmarks
{
    private const int Frames = 64;

    [Params(false, true)]
    public bool Tls { get; set; }

    private readonly byte[] _frame = new byte[MigrationChannel.MaxPayloadBytes(MigrationFrameType.Pages)];
    private byte[] _answer = new byte[4096];
    private string _directory = "";
    private Socket? _client;
    private Stream? _sourceStream;
    private MigrationChannel? _source;
    private Thread? _receiver;
    private MigrationTls? _tls;

    [GlobalSetup]
    public void Connect()
    {
        new Random(1).NextBytes(_frame);
        _directory = Directory.CreateTempSubdirectory("vmm-bench-tls-").FullName;
        var tls = _tls = Tls ? WriteTlsDirectory(_directory) : null;
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        // The target's side opens the connection on its own thread: a plain one waits for the first frame.
        _receiver = new Thread(() => Receive(listener, tls)) { IsBackground = true };
        _receiver.Start();
        _client = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        _client.Connect(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndpoint).Port);
        _sourceStream = tls?.AuthenticateTarget(_client, "127.0.0.1") ?? new NetworkStream(_client, ownsSocket: false);
        _source = new MigrationChannel(_sourceStream);
    }

    /// <summary>The target's side: reads every frame, answers each pass end, until the source closes.</summary>
    private static void Receive(TcpListener listener, MigrationTls? tls)
    {
        using var connection = listener.AcceptSocket();
        listener.Stop();
        using var stream = IncomingMigrationStream.Open(connection, tls);
        var channel = new MigrationChannel(stream);
        byte[] buffer = new byte[1 << 20];
        try
        {
            while (true)
            {
                var (type, payload) = channel.Receive(ref buffer);
                if (type != MigrationFrameType.PassEnd) continue;
                channel.Send(MigrationFrameType.PassDone, payload.Span);
                channel.Flush();
            }
        }
        catch (MigrationException)
        {
            // The source closed the connection: the run is over.
        }
    }

    [Benchmark]
    public void Send64MiBAndWaitForThePassDone()
    {
        for (int i = 0; i < Frames; i++) _source!.Send(MigrationFrameType.Pages, _frame);
        _source!.Send(MigrationFrameType.PassEnd, [1, 0, 0, 0]);
        _source.Flush();
        _source.Receive(ref _answer);
    }

    [GlobalCleanup]
    public void Close()
    {
        _sourceStream?.Dispose();
        _client?.Dispose();
        _receiver?.Join();
        _tls?.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    /// <summary>A CA and one host certificate it signed for 127.0.0.1, as a --tls-dir both ends use.</summary>
    private static MigrationTls WriteTlsDirectory(string directory)
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=bench CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(2));
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=bench host", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        using var host = request.Create(ca, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(1), [1, 2, 3, 4]);
        File.WriteAllText(Path.Combine(directory, "ca.pem"), ca.ExportCertificatePem());
        File.WriteAllText(Path.Combine(directory, "cert.pem"), host.ExportCertificatePem());
        File.WriteAllText(Path.Combine(directory, "key.pem"), key.ExportPkcs8PrivateKeyPem());
        return MigrationTls.Load(directory);
    }
}
