using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Text;
using Vmm.Migration;
using Xunit;

namespace Vmm.Tests.Migration;

/// <summary>Mutual TLS between a migration source and target in one process, over loopback TCP: each side does
/// what vmm does (<see cref="MigrationTls.AuthenticateTarget"/>, <see cref="IncomingMigrationStream.Open"/>),
/// then the source sends a Hello frame and the target answers. A connection either side refuses must fail on
/// both, each saying why, with nothing but the reason passing over it.</summary>
public sealed class MigrationTlsTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private readonly TestCertificates _certificates = new();

    public void Dispose() => _certificates.Dispose();

    /// <summary>What each side saw: its failure, or the frame it received ("Type: text").</summary>
    private sealed record Outcome(string? SourceFailure, string? SourceHeard, string? TargetFailure, string? TargetHeard, SslProtocols? Protocol);

    /// <summary>One connection: the source (TLS with <paramref name="sourceDirectory"/>, plain when null, or
    /// <paramref name="sourceHandshake"/>) to a target (TLS with <paramref name="targetDirectory"/>, plain when null).</summary>
    private static Outcome Connect(string? sourceDirectory, string? targetDirectory, string host = "127.0.0.1", Func<Socket, Stream>? sourceHandshake = null)
    {
        using var sourceTls = sourceDirectory is null ? null : MigrationTls.Load(sourceDirectory);
        using var targetTls = targetDirectory is null ? null : MigrationTls.Load(targetDirectory);
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            var target = Task.Run(() => Target(listener, targetTls));
            var source = Source(((IPEndPoint)listener.LocalEndpoint).Port, host, sourceTls, sourceHandshake);
            Assert.True(target.Wait(Patience), "the target side did not finish");
            return new Outcome(source.Failure, source.Heard, target.Result.Failure, target.Result.Heard, target.Result.Protocol);
        }
        finally
        {
            listener.Stop();
        }
    }

    private static (string? Failure, string? Heard) Source(int port, string host, MigrationTls? tls, Func<Socket, Stream>? handshake)
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        socket.Connect(IPAddress.Loopback, port);
        socket.ReceiveTimeout = socket.SendTimeout = (int)Patience.TotalMilliseconds;
        try
        {
            using var stream = handshake?.Invoke(socket) ?? tls?.AuthenticateTarget(socket, host) ?? new NetworkStream(socket, ownsSocket: false);
            var channel = new MigrationChannel(stream);
            channel.SendText(MigrationFrameType.Hello, "from the source");
            channel.Flush();
            return (null, Heard(channel));
        }
        catch (MigrationException e)
        {
            return (e.Message, null);
        }
    }

    private static (string? Failure, string? Heard, SslProtocols? Protocol) Target(TcpListener listener, MigrationTls? tls)
    {
        using var socket = listener.AcceptSocket();
        socket.ReceiveTimeout = socket.SendTimeout = (int)Patience.TotalMilliseconds;
        // As the daemon has it: a frame's header and payload leave as two segments.
        socket.NoDelay = true;
        try
        {
            using var stream = IncomingMigrationStream.Open(socket, tls);
            var channel = new MigrationChannel(stream);
            string heard = Heard(channel);
            if (heard.StartsWith("Hello", StringComparison.Ordinal))
            {
                channel.Send(MigrationFrameType.PassDone, [1, 0, 0, 0]);
                channel.Flush();
            }
            return (null, heard, (stream as SslStream)?.SslProtocol);
        }
        catch (MigrationException e)
        {
            // As the daemon does: end this side and let the source read the reason before the socket closes.
            socket.Shutdown(SocketShutdown.Send);
            try { while (socket.Receive(new byte[4096]) > 0) { } }
            catch (SocketException) { }
            return (e.Message, null, null);
        }
    }

    private static string Heard(MigrationChannel channel)
    {
        byte[] buffer = new byte[4096];
        var (type, payload) = channel.Receive(ref buffer);
        return type == MigrationFrameType.PassDone ? "PassDone" : $"{type}: {Encoding.UTF8.GetString(payload.Span)}";
    }

    [Fact]
    public void MutualTls_BothSidesAcceptEachOtherAndFramesPassOverTls13()
    {
        var outcome = Connect(_certificates.Good, _certificates.Good);

        Assert.Equal(new Outcome(null, "PassDone", null, "Hello: from the source", SslProtocols.Tls13), outcome);
    }

    [Fact]
    public void TargetCertificateFromAnotherCa_TheSourceRefusesAndTellsTheTarget()
    {
        var outcome = Connect(_certificates.Good, _certificates.SignedByOtherCa);

        Assert.Equal($"refused the TLS session: the target's certificate is not signed by the CA in {_certificates.Good}/ca.pem", outcome.SourceFailure);
        Assert.Equal("Abort: the source refused the TLS session: the target's certificate is not signed by the CA the source trusts", outcome.TargetHeard);
    }

    [Fact]
    public void SourceCertificateFromAnotherCa_TheTargetRefusesAndTellsTheSource()
    {
        var outcome = Connect(_certificates.SignedByOtherCa, _certificates.Good);

        Assert.Equal($"refused the TLS session: the source's certificate is not signed by the CA in {_certificates.Good}/ca.pem", outcome.TargetFailure);
        Assert.Equal("Error: the target refused the TLS session: the source's certificate is not signed by the CA the target trusts", outcome.SourceHeard);
    }

    [Fact]
    public void ExpiredCertificates_AreRefusedOnEitherSide()
    {
        var expiredTarget = Connect(_certificates.Good, _certificates.Expired);
        var expiredSource = Connect(_certificates.Expired, _certificates.Good);

        Assert.Matches(@"^refused the TLS session: the target's certificate expired on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", expiredTarget.SourceFailure);
        Assert.StartsWith("Abort: the source refused the TLS session: the target's certificate expired on ", expiredTarget.TargetHeard);
        Assert.StartsWith("refused the TLS session: the source's certificate expired on ", expiredSource.TargetFailure);
        Assert.StartsWith("Error: the target refused the TLS session: the source's certificate expired on ", expiredSource.SourceHeard);
    }

    [Fact]
    public void SourceWithoutACertificate_IsRefused()
    {
        var outcome = Connect(null, _certificates.Good, sourceHandshake: socket =>
        {
            var tls = new SslStream(new NetworkStream(socket, ownsSocket: false));
            tls.AuthenticateAsClient(new SslClientAuthenticationOptions { TargetHost = "127.0.0.1", RemoteCertificateValidationCallback = (_, _, _, _) => true });
            return tls;
        });

        Assert.Equal("refused the TLS session: the source presented no certificate", outcome.TargetFailure);
        Assert.Equal("Error: the target refused the TLS session: the source presented no certificate", outcome.SourceHeard);
    }

    [Fact]
    public void TargetCertificateNamingAnotherHost_IsRefusedButOneWithoutNamesIsTakenOnItsChain()
    {
        string elsewhere = _certificates.Write("elsewhere", _certificates.Ca, _certificates.MakeHost(dnsNames: ["target.example"], addresses: [IPAddress.Parse("10.0.0.2")]));
        string nameless = _certificates.Write("nameless", _certificates.Ca, _certificates.MakeHost(noNames: true));

        Assert.Equal("refused the TLS session: the target's certificate does not name 127.0.0.1 (it names target.example, 10.0.0.2)",
            Connect(_certificates.Good, elsewhere).SourceFailure);
        Assert.Equal("PassDone", Connect(_certificates.Good, nameless).SourceHeard);
        Assert.Equal("PassDone", Connect(_certificates.Good, _certificates.Good, host: "localhost").SourceHeard);
    }

    [Fact]
    public void SourceCertificateForTlsServersOnly_IsRefused()
    {
        string serverOnly = _certificates.Write("server-only", _certificates.Ca, _certificates.MakeHost(extendedKeyUsage: "1.3.6.1.5.5.7.3.1"));

        Assert.Equal("refused the TLS session: the source's certificate is not meant for a TLS client (its extended key usage)",
            Connect(serverOnly, _certificates.Good).TargetFailure);
    }

    [Fact]
    public void TlsSourceToAPlainTarget_BothSayTheTargetTakesNoTls()
    {
        var outcome = Connect(_certificates.Good, null);

        const string why = "a TLS connection reached this plain migrate-receive (start it with --tls-dir to take TLS)";
        Assert.Equal(why, outcome.TargetFailure);
        Assert.Equal($"the target refused: {why}", outcome.SourceFailure);
    }

    [Fact]
    public void PlainSourceToATlsTarget_BothSayTheTargetTakesTlsOnly()
    {
        var outcome = Connect(null, _certificates.Good);

        const string why = "a plain migration stream reached this migrate-receive, which takes TLS only (migrate with --tls-dir)";
        Assert.Equal(why, outcome.TargetFailure);
        Assert.Equal($"Error: {why}", outcome.SourceHeard);
    }

    [Fact]
    public async Task TlsSourceToSomethingElse_SaysTheTargetDoesNotSpeakTls()
    {
        using var tls = MigrationTls.Load(_certificates.Good);
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var web = Task.Run(() =>
        {
            using var socket = listener.AcceptSocket();
            socket.Send("HTTP/1.0 400 Bad Request\r\n\r\n"u8);
            socket.Shutdown(SocketShutdown.Send);
            while (socket.Receive(new byte[4096]) > 0) { }
        });
        using var client = new Socket(SocketType.Stream, ProtocolType.Tcp);
        client.Connect(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndpoint).Port);

        var e = Assert.Throws<MigrationException>(() => tls.AuthenticateTarget(client, "127.0.0.1"));
        client.Dispose();
        await web.WaitAsync(Patience);
        listener.Stop();
        Assert.Equal("TLS handshake failed: the target does not speak TLS (a plain vmm migration stream?)", e.Message);
    }

    [Fact]
    public void KeysInPkcs8AndSec1Pem_BothServe()
    {
        var host = _certificates.MakeHost();
        string sec1 = _certificates.Write("sec1", _certificates.Ca, host, TestCertificates.KeyFormat.Sec1);

        Assert.Equal("PassDone", Connect(sec1, _certificates.Good).SourceHeard);
        Assert.Equal("PassDone", Connect(_certificates.Good, sec1).SourceHeard);
    }

    [Fact]
    public void Load_NamesTheFileThatWillNotDo()
    {
        string missing = Path.Combine(_certificates.Good, "missing");
        Assert.Equal($"{missing}/ca.pem cannot be read: no such file", LoadFailure(missing));
        Assert.Equal($"{_certificates.CaOnly}/cert.pem cannot be read: no such file", LoadFailure(_certificates.CaOnly));

        string noCa = Copy(_certificates.Good, "no-ca", "ca.pem", "not a certificate\n");
        Assert.Equal($"{noCa}/ca.pem holds no PEM certificate (expected the CA this host trusts)", LoadFailure(noCa));

        string badCert = Copy(_certificates.Good, "bad-cert", "cert.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        Assert.StartsWith($"{badCert}/cert.pem is not a PEM certificate file: ", LoadFailure(badCert));

        string otherKey = Copy(_certificates.Good, "other-key", "key.pem", File.ReadAllText(Path.Combine(_certificates.Expired, "key.pem")));
        Assert.StartsWith($"{otherKey}/key.pem is not an unencrypted PEM private key for the certificate in {otherKey}/cert.pem: ", LoadFailure(otherKey));
    }

    private static string LoadFailure(string directory) => Assert.Throws<ConfigurationException>(() => MigrationTls.Load(directory)).Message;

    /// <summary>A copy of <paramref name="from"/> with one file replaced.</summary>
    private static string Copy(string from, string name, string file, string content)
    {
        string directory = Directory.CreateDirectory(Path.Combine(Path.GetDirectoryName(from)!, name)).FullName;
        foreach (string f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(directory, Path.GetFileName(f)));
        File.WriteAllText(Path.Combine(directory, file), content);
        return directory;
    }
}
