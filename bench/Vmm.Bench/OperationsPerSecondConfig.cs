using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;

namespace Vmm.Bench;

/// <summary>Adds the Op/s column: every benchmark here reports a rate (chains, requests per second).</summary>
public sealed class OperationsPerSecondConfig : ManualConfig
{
    public OperationsPerSecondConfig() => AddColumn(StatisticColumn.OperationsPerSecond);
}
