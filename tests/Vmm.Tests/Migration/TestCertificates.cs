using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Vmm.Tests.Migration;

/// <summary>Certificates for the TLS tests, made in-process: two unrelated CAs and host certificates signed
/// by them, written as the --tls-dir directories vmm reads (ca.pem, cert.pem, key.pem). Host certificates
/// name 127.0.0.1 and localhost unless told otherwise, and carry no extended key usage (so serve as TLS
/// server and client both), as a host that is source and target alike needs.</summary>
public sealed class TestCertificates : IDisposable
{
    public sealed record Host(X509Certificate2 Certificate, ECDsa Key);

    public enum KeyFormat { Pkcs8, Sec1 }

    private readonly string _root = Directory.CreateTempSubdirectory("vmm-tls-").FullName;
    private readonly ECDsa _caKey, _otherCaKey;

    public TestCertificates()
    {
        var (ca, caKey) = MakeCa("vmm test CA");
        var (otherCa, otherCaKey) = MakeCa("some other CA");
        Ca = ca;
        OtherCa = otherCa;
        var good = MakeHost(ca, caKey);
        // The usual set of directories: each trusts a CA and holds a host identity.
        Good = Write("good", ca, good);
        SignedByOtherCa = Write("signed-by-other-ca", ca, MakeHost(otherCa, otherCaKey));
        TrustsOtherCa = Write("trusts-other-ca", otherCa, good);
        Expired = Write("expired", ca, MakeHost(ca, caKey, notAfter: DateTimeOffset.UtcNow.AddDays(-1)));
        CaOnly = Write("ca-only", ca, host: null);
        _caKey = caKey;
        _otherCaKey = otherCaKey;
    }

    public X509Certificate2 Ca { get; }
    public X509Certificate2 OtherCa { get; }

    /// <summary>Trusts <see cref="Ca"/>, with a certificate it signed.</summary>
    public string Good { get; }
    /// <summary>Trusts <see cref="Ca"/>, with a certificate <see cref="OtherCa"/> signed.</summary>
    public string SignedByOtherCa { get; }
    /// <summary>Trusts <see cref="OtherCa"/>, with a certificate <see cref="Ca"/> signed: the peer that
    /// accepts a <see cref="SignedByOtherCa"/> host and is accepted by a <see cref="Good"/> one.</summary>
    public string TrustsOtherCa { get; }
    /// <summary>Trusts <see cref="Ca"/>, with a certificate it signed that expired yesterday.</summary>
    public string Expired { get; }
    /// <summary>ca.pem and nothing else.</summary>
    public string CaOnly { get; }

    /// <summary>A host certificate signed by <see cref="Ca"/> (or <see cref="OtherCa"/>).</summary>
    public Host MakeHost(bool byOtherCa = false, IEnumerable<string>? dnsNames = null, IEnumerable<IPAddress>? addresses = null,
                         bool noNames = false, string? extendedKeyUsage = null, DateTimeOffset? notAfter = null) =>
        MakeHost(byOtherCa ? OtherCa : Ca, byOtherCa ? _otherCaKey : _caKey, dnsNames, addresses, noNames, extendedKeyUsage, notAfter);

    /// <summary>Writes a --tls-dir directory trusting <paramref name="trusted"/>, holding <paramref name="host"/>
    /// (if any) as cert.pem and key.pem.</summary>
    public string Write(string name, X509Certificate2 trusted, Host? host, KeyFormat keyFormat = KeyFormat.Pkcs8)
    {
        string directory = Directory.CreateDirectory(Path.Combine(_root, name)).FullName;
        File.WriteAllText(Path.Combine(directory, "ca.pem"), trusted.ExportCertificatePem());
        if (host is not null)
        {
            File.WriteAllText(Path.Combine(directory, "cert.pem"), host.Certificate.ExportCertificatePem());
            File.WriteAllText(Path.Combine(directory, "key.pem"), keyFormat == KeyFormat.Pkcs8 ? host.Key.ExportPkcs8PrivateKeyPem() : host.Key.ExportECPrivateKeyPem());
        }
        return directory;
    }

    private static (X509Certificate2, ECDsa) MakeCa(string name)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        return (request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-30), DateTimeOffset.UtcNow.AddYears(2)), key);
    }

    private static Host MakeHost(X509Certificate2 ca, ECDsa caKey, IEnumerable<string>? dnsNames = null, IEnumerable<IPAddress>? addresses = null,
                                 bool noNames = false, string? extendedKeyUsage = null, DateTimeOffset? notAfter = null)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=vmm test host", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        if (!noNames)
        {
            var names = new SubjectAlternativeNameBuilder();
            foreach (string dns in dnsNames ?? ["localhost"]) names.AddDnsName(dns);
            foreach (var address in addresses ?? [IPAddress.Loopback]) names.AddIpAddress(address);
            request.CertificateExtensions.Add(names.Build());
        }
        if (extendedKeyUsage is not null)
            request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(extendedKeyUsage)], false));
        var validTo = notAfter ?? DateTimeOffset.UtcNow.AddYears(1);
        var validFrom = validTo < DateTimeOffset.UtcNow ? validTo.AddDays(-10) : DateTimeOffset.UtcNow.AddDays(-1);
        byte[] serial = RandomNumberGenerator.GetBytes(8);
        serial[0] &= 0x7f;
        var certificate = request.Create(ca.SubjectName, X509SignatureGenerator.CreateForECDsa(caKey), validFrom, validTo, serial);
        return new Host(certificate, key);
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);
}
