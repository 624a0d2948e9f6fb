using System.Buffers.Binary;
using System.Globalization;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Vmm.Migration;

/// <summary>Mutual TLS for migration connections (<c>--tls-dir DIR</c>): <c>DIR/cert.pem</c> and
/// <c>DIR/key.pem</c> are this host's identity, <c>DIR/ca.pem</c> the CA it trusts, and nothing else is
/// trusted: a peer's chain must end at a certificate of ca.pem (no system roots), be valid now, and be meant
/// for its role (TLS server for a target, TLS client for a source). Revocation is not checked: a migration
/// network rarely reaches a CRL or OCSP responder, so a host is revoked by reissuing the CA. The source also
/// checks that the target's certificate names the host or address it connected to, when the certificate has
/// subject alternative names; one without any is taken on its chain alone (hosts are often reached by an
/// address no certificate names; then every holder of a certificate from this CA is a trusted target).
/// Each side lets the TLS handshake finish whatever it finds and then judges the peer itself, so that a peer
/// it refuses is told why inside the session (an Abort or Error frame) before the connection closes: both
/// ends of a refused connection can say what went wrong, and nothing of a VM passes over it.</summary>
public sealed class MigrationTls : IDisposable
{
    /// <summary>The first byte of a TLS ClientHello (a handshake record).</summary>
    public const byte HandshakeRecordType = 0x16;
    private const byte AlertRecordType = 0x15;
    private const SslProtocols Protocols = SslProtocols.Tls12 | SslProtocols.Tls13;
    /// <summary>How long a refusing source waits for the target to read its reason and close.</summary>
    private static readonly TimeSpan LastWordTime = TimeSpan.FromSeconds(1);

    private readonly string _caFile;
    private readonly X509Certificate2Collection _trusted;
    private readonly X509Certificate2Collection _certificates;
    private readonly X509Certificate2 _identity;
    private readonly SslStreamCertificateContext _context;

    private MigrationTls(string caFile, X509Certificate2Collection trusted, X509Certificate2Collection certificates, X509Certificate2 identity)
    {
        _caFile = caFile;
        _trusted = trusted;
        _certificates = certificates;
        _identity = identity;
        // cert.pem may carry intermediates after the host's certificate; they go to the peer with it.
        // Offline: nothing is fetched from the network to complete the chain.
        _context = SslStreamCertificateContext.Create(identity, new X509Certificate2Collection(certificates.Skip(1).ToArray()), offline: true);
    }

    /// <summary>Reads DIR/ca.pem, DIR/cert.pem and DIR/key.pem (PKCS#8, RSA or EC, unencrypted). A file that is
    /// missing, unreadable or malformed, or a key that is not the certificate's, is a <see cref="ConfigurationException"/>
    /// naming the file.</summary>
    public static MigrationTls Load(string directory)
    {
        string caFile = Path.Combine(directory, "ca.pem"), certFile = Path.Combine(directory, "cert.pem"), keyFile = Path.Combine(directory, "key.pem");
        var trusted = ReadCertificates(caFile, "the CA this host trusts");
        var certificates = ReadCertificates(certFile, "this host's certificate");
        string key;
        try
        {
            key = File.ReadAllText(keyFile);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigurationException($"{keyFile} cannot be read: {Reason(e)}");
        }
        try
        {
            var identity = X509Certificate2.CreateFromPem(certificates[0].ExportCertificatePem(), key);
            return new MigrationTls(caFile, trusted, certificates, identity);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            throw new ConfigurationException($"{keyFile} is not an unencrypted PEM private key for the certificate in {certFile}: {Reason(e)}");
        }
    }

    /// <summary>The exception's message as the end of ours: its file name is in ours already.</summary>
    private static string Reason(Exception e) =>
        e is FileNotFoundException or DirectoryNotFoundException ? "no such file" : e.Message.TrimEnd('.');

    private static X509Certificate2Collection ReadCertificates(string file, string what)
    {
        var certificates = new X509Certificate2Collection();
        try
        {
            certificates.ImportFromPemFile(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigurationException($"{file} cannot be read: {Reason(e)}");
        }
        catch (CryptographicException e)
        {
            throw new ConfigurationException($"{file} is not a PEM certificate file: {Reason(e)}");
        }
        if (certificates.Count == 0) throw new ConfigurationException($"{file} holds no PEM certificate (expected {what})");
        return certificates;
    }

    /// <summary>The source's side: TLS with the target over <paramref name="socket"/>, reached as
    /// <paramref name="host"/>. Returns the stream to migrate over, or throws a <see cref="MigrationException"/>
    /// saying why there is none (the target told first when this side refused it).</summary>
    public Stream AuthenticateTarget(Socket socket, string host)
    {
        // A plain vmm target answers with an Error frame: up to a whole one is kept to quote it.
        var recording = new FirstBytesRecordingStream(new NetworkStream(socket, ownsSocket: false),
            MigrationChannel.HeaderBytes + MigrationChannel.MaxPayloadBytes(MigrationFrameType.Error));
        var tls = new SslStream(recording);
        string? refusal = null, told = null;
        try
        {
            tls.AuthenticateAsClient(new SslClientAuthenticationOptions
            {
                TargetHost = host,
                EnabledSslProtocols = Protocols,
                ClientCertificateContext = _context,
                CertificateChainPolicy = ChainPolicy(),
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
                {
                    refusal = Problem("target", certificate, chain, errors, host, $"the CA in {_caFile}");
                    told = Problem("target", certificate, chain, errors, host, "the CA the source trusts");
                    return true;
                },
            });
        }
        catch (Exception e) when (e is AuthenticationException or IOException or ObjectDisposedException)
        {
            var failure = HandshakeFailure(recording, socket, e);
            tls.Dispose();
            throw failure;
        }
        if (refusal is null) return tls;
        TellPeer(tls, MigrationFrameType.Abort, $"the source refused the TLS session: {told}");
        // The target reads the reason and closes; closing first, with its session tickets unread, would reset
        // the connection and could lose the reason on the way.
        try
        {
            socket.Shutdown(SocketShutdown.Send);
            socket.ReceiveTimeout = (int)LastWordTime.TotalMilliseconds;
            byte[] sink = new byte[16 << 10];
            var waiting = System.Diagnostics.Stopwatch.StartNew();
            while (waiting.Elapsed < LastWordTime && socket.Receive(sink) > 0) { }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Gone already.
        }
        tls.Dispose();
        throw new MigrationException($"refused the TLS session: {refusal}");
    }

    /// <summary>The target's side: TLS with a source over <paramref name="connection"/>. Returns the stream to
    /// receive from, or throws a <see cref="MigrationException"/> saying why there is none (the source told
    /// first when this side refused it).</summary>
    public Stream AuthenticateSource(Stream connection)
    {
        var tls = new SslStream(connection);
        string? refusal = null, told = null;
        try
        {
            tls.AuthenticateAsServer(new SslServerAuthenticationOptions
            {
                ServerCertificateContext = _context,
                ClientCertificateRequired = true,
                EnabledSslProtocols = Protocols,
                CertificateChainPolicy = ChainPolicy(),
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
                {
                    refusal = Problem("source", certificate, chain, errors, host: null, $"the CA in {_caFile}");
                    told = Problem("source", certificate, chain, errors, host: null, "the CA the target trusts");
                    return true;
                },
            });
        }
        catch (Exception e) when (e is AuthenticationException or IOException or ObjectDisposedException)
        {
            tls.Dispose();
            throw new MigrationException($"TLS handshake with the source failed: {Innermost(e)}", e);
        }
        if (refusal is null) return tls;
        TellPeer(tls, MigrationFrameType.Error, $"the target refused the TLS session: {told}");
        tls.Dispose();
        throw new MigrationException($"refused the TLS session: {refusal}");
    }

    private X509ChainPolicy ChainPolicy()
    {
        var policy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
        policy.CustomTrustStore.AddRange(_trusted);
        return policy;
    }

    /// <summary>What is wrong with the peer's certificate, as a sentence about the <paramref name="role"/>; null
    /// when nothing is. The chain is the one SslStream built with <see cref="ChainPolicy"/> (so against ca.pem
    /// only) and with the certificate usage its role needs.</summary>
    private static string? Problem(string role, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors, string? host, string trustedCa)
    {
        if (certificate is null || errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable)) return $"the {role} presented no certificate";
        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateChainErrors))
        {
            var status = chain?.ChainStatus.Aggregate(X509ChainStatusFlags.NoError, (all, s) => all | s.Status) ?? X509ChainStatusFlags.NoError;
            if (status.HasFlag(X509ChainStatusFlags.NotTimeValid) && chain!.ChainElements.FirstOrDefault(e => e.ChainElementStatus.Any(s => s.Status == X509ChainStatusFlags.NotTimeValid)) is { } stale)
            {
                string whose = stale.Certificate.Thumbprint == chain.ChainElements[0].Certificate.Thumbprint ? $"the {role}'s certificate" : $"the {role}'s CA certificate {stale.Certificate.Subject}";
                return DateTime.Now > stale.Certificate.NotAfter ? $"{whose} expired on {Utc(stale.Certificate.NotAfter)}" : $"{whose} is not valid before {Utc(stale.Certificate.NotBefore)}";
            }
            if ((status & (X509ChainStatusFlags.PartialChain | X509ChainStatusFlags.UntrustedRoot | X509ChainStatusFlags.NotSignatureValid)) != 0)
                return $"the {role}'s certificate is not signed by {trustedCa}";
            if (status.HasFlag(X509ChainStatusFlags.NotValidForUsage))
                return $"the {role}'s certificate is not meant for a TLS {(role == "target" ? "server" : "client")} (its extended key usage)";
            string details = string.Join("; ", chain?.ChainStatus.Select(s => s.StatusInformation.Trim()).Where(s => s.Length > 0) ?? []);
            return $"the {role}'s certificate is not valid: {(details.Length > 0 ? details : status.ToString())}";
        }
        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch) && host is not null && AlternativeNames(certificate) is { } names)
            return $"the {role}'s certificate does not name {host} (it names {(names.Count > 0 ? string.Join(", ", names) : "nothing usable")})";
        return null;
    }

    /// <summary>The DNS names and IP addresses the certificate names, or null when it has no subject
    /// alternative names (and so is not held to the host name).</summary>
    private static List<string>? AlternativeNames(X509Certificate certificate)
    {
        using var certificate2 = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        if (certificate2.Extensions["2.5.29.17"] is not { } extension) return null;
        var names = new X509SubjectAlternativeNameExtension(extension.RawData, extension.Critical);
        return [.. names.EnumerateDnsNames(), .. names.EnumerateIPAddresses().Select(a => a.ToString())];
    }

    private static string Utc(DateTime time) => time.ToUniversalTime().ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture);

    private static void TellPeer(SslStream tls, MigrationFrameType type, string text)
    {
        try
        {
            var channel = new MigrationChannel(tls);
            channel.SendText(type, text);
            channel.Flush();
        }
        catch (MigrationException)
        {
            // The peer is gone; it learns nothing more.
        }
    }

    /// <summary>Why the source's handshake failed, from what the target sent instead of a TLS answer.</summary>
    private static MigrationException HandshakeFailure(FirstBytesRecordingStream recording, Socket socket, Exception e)
    {
        if (recording.Recorded is [(byte)MigrationFrameType.Error, ..])
        {
            // SslStream stopped at the first bytes it could not take for a TLS record: the rest of a plain Error
            // frame may still be on its way.
            try
            {
                socket.ReceiveTimeout = (int)LastWordTime.TotalMilliseconds;
                recording.RecordUpTo(MigrationChannel.HeaderBytes);
                if (recording.Recorded.Length == MigrationChannel.HeaderBytes)
                    recording.RecordUpTo(MigrationChannel.HeaderBytes + (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(recording.Recorded[1..]),
                        (uint)MigrationChannel.MaxPayloadBytes(MigrationFrameType.Error)));
            }
            catch (Exception more) when (more is IOException or SocketException or ObjectDisposedException)
            {
                // Whatever came will have to do.
            }
        }
        var answer = recording.Recorded;
        if (answer.IsEmpty) return new MigrationException($"TLS handshake failed: the target closed the connection ({Innermost(e)}; see its log)", e);
        if (answer[0] == (byte)MigrationFrameType.Error && PlainError(answer.ToArray()) is { } text) return new MigrationException($"the target refused: {text}", e);
        if (answer[0] is not (HandshakeRecordType or AlertRecordType))
            return new MigrationException("TLS handshake failed: the target does not speak TLS (a plain vmm migration stream?)", e);
        return new MigrationException($"TLS handshake failed: {Innermost(e)}", e);
    }

    /// <summary>The text of the plain vmm Error frame that <paramref name="bytes"/> start with, or null.</summary>
    private static string? PlainError(byte[] bytes)
    {
        try
        {
            byte[] buffer = new byte[MigrationChannel.MaxPayloadBytes(MigrationFrameType.Error)];
            var (type, payload) = new MigrationChannel(new MemoryStream(bytes)).Receive(ref buffer);
            return type == MigrationFrameType.Error ? Encoding.UTF8.GetString(payload.Span) : null;
        }
        catch (MigrationException)
        {
            return null;
        }
    }

    /// <summary>The innermost message: SslStream's own ("Authentication failed, see inner exception") says nothing.</summary>
    private static string Innermost(Exception e)
    {
        while (e.InnerException is not null) e = e.InnerException;
        return e.Message;
    }

    public void Dispose()
    {
        _identity.Dispose();
        foreach (var certificate in _certificates) certificate.Dispose();
        foreach (var certificate in _trusted) certificate.Dispose();
    }
}
