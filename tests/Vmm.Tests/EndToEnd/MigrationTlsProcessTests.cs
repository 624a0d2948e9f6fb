using Vmm.Tests.Migration;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>Live migration over mutual TLS between `vmm` processes (`vmm ctl migrate --tls-dir`, `vmm
/// migrate-receive --tls-dir`), and the connections TLS refuses: each refusal is an error on both sides that
/// says why, the VM keeps running on its source, and the same daemon then takes a migration that is in order.</summary>
[Trait("Category", "Process")]
public sealed class MigrationTlsProcessTests(ITestOutputHelper output) : MigrationProcessTestBase(output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly TestCertificates _certificates = new();

    public override void Dispose()
    {
        _certificates.Dispose();
        base.Dispose();
    }

    /// <summary>With several connections, each further one has its own TLS handshake and joins the first.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void MutualTls_GuestKeepsTickingOnTheTargetWithEveryPageIntact(int connections)
    {
        var g = Guest();
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(extra: ["--tls-dir", _certificates.Good]);
        using var _ = target;
        using var source = StartSource(g, socket);
        using var ctl = Migrate(socket, listen, "--force", "--tls-dir", _certificates.Good, "--connections", $"{connections}");
        var (ctlExit, sourceExit, targetExit) = WaitForAll(ctl, source, target);

        Assert.Equal(0, ctlExit);
        Assert.Contains("\"state\":\"migrated\"", ctl.Console);
        Assert.Equal(0, sourceExit);
        Assert.Contains("migration: mutual TLS (Tls13) with the target CN=vmm test host", source.Log);
        Assert.Equal(connections, System.Text.RegularExpressions.Regex.Count(target.Log, @"migration \d+: mutual TLS \(Tls13\) with CN=vmm test host"));
        Assert.Equal(connections - 1, System.Text.RegularExpressions.Regex.Count(target.Log, @"connection \d of a migration under way"));
        Assert.Equal(GuestSuccess, targetExit);
        Assert.Equal(ExpectedConsole(g), source.Console + target.Console);
    }

    public enum Refusal
    {
        TargetCertificateFromAnotherCa,
        SourceCertificateFromAnotherCa,
        ExpiredSourceCertificate,
        TlsSourceToPlainTarget,
        PlainSourceToTlsTarget,
        SourceWithoutCertificateFiles,
    }

    /// <summary>How each refusal is set up: the daemon's --tls-dir, the refused and then the accepted
    /// migration's (null: plain), what the source's answer and the daemon's log say (null: the daemon never
    /// heard of it).</summary>
    private (string? Daemon, string? Refused, string? Accepted, string SourceSays, string? DaemonSays) Case(Refusal refusal)
    {
        var c = _certificates;
        const string tlsOnly = "a plain migration stream reached this migrate-receive, which takes TLS only (migrate with --tls-dir)";
        const string plainOnly = "a TLS connection reached this plain migrate-receive (start it with --tls-dir to take TLS)";
        return refusal switch
        {
            Refusal.TargetCertificateFromAnotherCa => (c.SignedByOtherCa, c.Good, c.TrustsOtherCa,
                $"refused the TLS session: the target's certificate is not signed by the CA in {c.Good}/ca.pem",
                "the source gave up: the source refused the TLS session: the target's certificate is not signed by the CA the source trusts"),
            Refusal.SourceCertificateFromAnotherCa => (c.Good, c.SignedByOtherCa, c.Good,
                "the target did not accept the VM: the target refused the TLS session: the source's certificate is not signed by the CA the target trusts",
                $"refused the TLS session: the source's certificate is not signed by the CA in {c.Good}/ca.pem"),
            Refusal.ExpiredSourceCertificate => (c.Good, c.Expired, c.Good,
                "the target did not accept the VM: the target refused the TLS session: the source's certificate expired on ",
                "refused the TLS session: the source's certificate expired on "),
            Refusal.TlsSourceToPlainTarget => (null, c.Good, null, $"the target refused: {plainOnly}", plainOnly),
            Refusal.PlainSourceToTlsTarget => (c.Good, null, c.Good, $"the target did not accept the VM: {tlsOnly}", tlsOnly),
            Refusal.SourceWithoutCertificateFiles => (c.Good, c.CaOnly, c.Good, $"{c.CaOnly}/cert.pem cannot be read: no such file; the VM keeps running here", null),
            _ => throw new ArgumentOutOfRangeException(nameof(refusal)),
        };
    }

    [Theory]
    [InlineData(Refusal.TargetCertificateFromAnotherCa)]
    [InlineData(Refusal.SourceCertificateFromAnotherCa)]
    [InlineData(Refusal.ExpiredSourceCertificate)]
    [InlineData(Refusal.TlsSourceToPlainTarget)]
    [InlineData(Refusal.PlainSourceToTlsTarget)]
    [InlineData(Refusal.SourceWithoutCertificateFiles)]
    public void Refused_BothSidesSayWhy_TheVmRunsOnHere_AndTheDaemonTakesTheNextMigration(Refusal refusal)
    {
        var (daemon, refused, accepted, sourceSays, daemonSays) = Case(refusal);
        // Long enough to outlive a refused and an accepted `vmm ctl`, each a JIT start on a busy host.
        var g = Guest(ticks: 250);
        string socket = Path.Combine(_directory, "src.sock");
        var (target, listen) = StartTarget(once: false, extra: [.. TlsDir(daemon)]);
        using var _ = target;
        using var source = StartSource(g, socket);

        using (var ctl = Migrate(socket, listen, [.. TlsDir(refused)]))
        {
            int? exit = ctl.WaitForExit(Patience);
            Show("refused ctl", ctl);
            Assert.Equal(1, exit);
            Assert.Contains($"migration to {listen} failed: {sourceSays}", ctl.Console);
            Assert.Contains("the VM keeps running here", ctl.Console);
        }
        if (daemonSays is not null)
            Assert.True(target.WaitFor((_, log) => log.Contains($"migration 1 from") && log.Contains($"failed and was discarded: {daemonSays}"), Patience), target.ToString());
        WaitForMoreTicks(source, 2);

        using var good = Migrate(socket, listen, ["--force", .. TlsDir(accepted)]);
        int? goodExit = good.WaitForExit(Patience);
        int? sourceExit = source.WaitForExit(Patience);
        // The refused connection was the daemon's first, unless the source never made one.
        int n = daemonSays is null ? 1 : 2;
        bool runsThere = target.WaitFor((_, log) => log.Contains($"migration {n}: the VM runs here"), Patience);
        Show("accepted ctl", good);
        Show("source", source);
        Show("target", target);
        Assert.Equal(0, goodExit);
        Assert.Equal(0, sourceExit);
        Assert.True(runsThere);
    }

    private static string[] TlsDir(string? directory) => directory is null ? [] : ["--tls-dir", directory];

    [Fact]
    public void PlainListenerReachableFromOtherHosts_RefusesToStartUnlessInsecure()
    {
        var refused = VmmProcess.Run(["migrate-receive", "--listen", "0.0.0.0:0"], Timeout);
        Assert.Equal(ExitCodes.VmmError, refused.ExitCode);
        Assert.Contains("--listen 0.0.0.0:0: migrations from other hosts need --tls-dir DIR (mutual TLS)", refused.Log);

        var (insecure, _) = StartTarget("0.0.0.0:0", extra: ["--insecure"]);
        insecure.Dispose();
        var (tls, _) = StartTarget("0.0.0.0:0", extra: ["--tls-dir", _certificates.Good]);
        tls.Dispose();
    }

    [Fact]
    public void DaemonWithUnusableTlsFiles_RefusesToStartNamingTheFile()
    {
        var result = VmmProcess.Run(["migrate-receive", "--listen", "127.0.0.1:0", "--tls-dir", _certificates.CaOnly], Timeout);

        Assert.Equal(ExitCodes.VmmError, result.ExitCode);
        Assert.Contains($"vmm: error: --tls-dir {_certificates.CaOnly}: {_certificates.CaOnly}/cert.pem cannot be read: no such file", result.Log);
    }
}
