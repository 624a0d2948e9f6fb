using Xunit;

namespace Vmm.Tests.EndToEnd;

/// <summary>Linux guests run one at a time: on a 2-core machine two emulated kernels side by side each
/// take twice as long, and their timings would mean nothing.</summary>
[CollectionDefinition(Collection)]
public sealed class LinuxGuests
{
    public const string Collection = "Linux guests";
}
