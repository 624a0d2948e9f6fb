using System.Net;
using Vmm.Cli;
using Vmm.Migration;
using Xunit;

namespace Vmm.Tests.Cli;

public sealed class MigrateReceiveCommandTests
{
    /// <summary>Without --tls-dir, migrate-receive listens only where no other host can reach it, unless --insecure.</summary>
    [Theory]
    [InlineData("127.0.0.1", false)]
    [InlineData("127.3.2.1", false)]
    [InlineData("::1", false)]
    [InlineData("::ffff:127.0.0.1", false)]
    [InlineData("0.0.0.0", true)]
    [InlineData("::", true)]
    [InlineData("10.231.0.2", true)]
    [InlineData("::ffff:10.231.0.2", true)]
    public void OnlyLoopbackListenersAreUnreachableFromOtherHosts(string address, bool reachable) =>
        Assert.Equal(reachable, IncomingListener.ReachableFromOtherHosts(IPAddress.Parse(address)));
}
