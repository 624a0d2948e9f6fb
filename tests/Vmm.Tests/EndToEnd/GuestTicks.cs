using System.Globalization;
using System.Text.RegularExpressions;
using Xunit;

namespace Vmm.Tests.EndToEnd;

/// <summary>The host's side of guest-images/ticks.c (vmmtest=ticks): reads its "VMM-TICK N CHAIN" lines from consoles
/// and from the file it keeps on the guest's disk, checks that they count 1, 2, 3, ... with every chain value right
/// (so no tick lost or repeated, wherever the VM ran), and asks it to stop over UDP.</summary>
internal static partial class GuestTicks
{
    public const int StopPort = 7003;
    public const string FileInGuest = "/vmm-ticks";

    /// <summary>The tick numbers on a console, in order.</summary>
    public static List<long> On(string console) => TickLine().Matches(console).Select(m => long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();

    /// <summary>The highest tick on a console, 0 if none.</summary>
    public static long Last(string console) => On(console).DefaultIfEmpty(0).Max();

    /// <summary>Asserts that the ticks of <paramref name="consoles"/>, read one after the other (the hosts the VM ran on, in
    /// order), are 1..N with the right chain, and returns N.</summary>
    public static long AssertCounted(string what, params string[] consoles)
    {
        var ticks = consoles.SelectMany(c => TickLine().Matches(c)).Select(Parse).ToList();
        return AssertChain(what, ticks);
    }

    /// <summary>Asserts that the console's "VMM-TICKS-DONE N CHAIN" matches the last tick, N.</summary>
    public static void AssertDone(string console, long last)
    {
        var done = DoneLine().Match(console);
        Assert.True(done.Success, "ticks did not report that it stopped");
        Assert.Equal((last, Chain(last)), Parse(done));
    }

    /// <summary>Asserts that the ticks file in the ext4 <paramref name="image"/> counts 1..N with the right chain,
    /// and returns N.</summary>
    public static long AssertFileCounted(string image)
    {
        string text = HostCommand.Checked("debugfs", "-R", $"cat {FileInGuest}", image);
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.All(lines, line => Assert.Matches(TickLine(), line));
        return AssertChain($"{FileInGuest} in {Path.GetFileName(image)}", lines.Select(l => Parse(TickLine().Match(l))).ToList());
    }

    /// <summary>Sends "stop" to the guest from inside <paramref name="wrapper"/> (a network namespace) every second until
    /// <paramref name="stopped"/> holds: a datagram may be lost, and a second one after the first is harmless.</summary>
    public static bool Stop(IReadOnlyList<string> wrapper, string guestAddress, Func<bool> stopped, TimeSpan patience)
    {
        var deadline = DateTime.UtcNow + patience;
        while (DateTime.UtcNow < deadline)
        {
            HostCommand.Run([.. wrapper, "bash", "-c", $"echo stop > /dev/udp/{guestAddress}/{StopPort}"]);
            for (int i = 0; i < 10; i++)
            {
                if (stopped()) return true;
                Thread.Sleep(100);
            }
        }
        return stopped();
    }

    private static long AssertChain(string what, List<(long Tick, uint Chain)> ticks)
    {
        Assert.True(ticks.Count > 0, $"{what}: no ticks");
        uint chain = 0;
        for (int i = 0; i < ticks.Count; i++)
        {
            chain = NextChain(chain, i + 1);
            Assert.True(ticks[i].Tick == i + 1, $"{what}: tick {ticks[i].Tick} where {i + 1} was due (a tick lost or repeated)");
            Assert.True(ticks[i].Chain == chain, $"{what}: tick {i + 1} carries chain {ticks[i].Chain:x8}, not {chain:x8}");
        }
        return ticks.Count;
    }

    /// <summary>ticks.c's chain after tick <paramref name="last"/>: every tick number folded in, in order.</summary>
    private static uint Chain(long last)
    {
        uint chain = 0;
        for (long tick = 1; tick <= last; tick++) chain = NextChain(chain, tick);
        return chain;
    }

    private static uint NextChain(uint chain, long tick) => unchecked(chain * 1000003u ^ (uint)tick);

    private static (long Tick, uint Chain) Parse(Match m) =>
        (long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), uint.Parse(m.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture));

    [GeneratedRegex(@"VMM-TICK (\d+) ([0-9a-f]{8})")]
    private static partial Regex TickLine();

    [GeneratedRegex(@"VMM-TICKS-DONE (\d+) ([0-9a-f]{8})")]
    private static partial Regex DoneLine();
}
