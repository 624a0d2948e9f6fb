using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Vmm.Fuzz;

/// <summary>A fuzz target over generated inputs, in-process and bounded: CI's check that nothing but the
/// target's expected failures escapes, without AFL or libFuzzer.</summary>
public static partial class SmokeRun
{
    /// <summary>Returns the process exit code: 0, or 1 after saving the first failing input to the current
    /// directory for <c>--replay</c>.</summary>
    public static int Run(IFuzzTarget target, int count, int seed, TextWriter output)
    {
        var clock = Stopwatch.StartNew();
        int index = 0, accepted = 0;
        var rejections = new Dictionary<string, int>();
        foreach (byte[] input in target.Generate(count, seed))
        {
            try
            {
                if (target.Run(input) is { } message)
                {
                    string rule = Numbers().Replace(message, "#");
                    rejections[rule] = rejections.GetValueOrDefault(rule) + 1;
                }
                else
                {
                    accepted++;
                }
            }
            catch (Exception error)
            {
                string file = $"smoke-failure-{target.Name}-seed{seed}-{index}.bin";
                File.WriteAllBytes(file, input);
                output.WriteLine($"smoke {target.Name}: input {index} (seed {seed}) threw {error}");
                output.WriteLine($"smoke {target.Name}: saved as {file}; reproduce with --replay {target.Name} {file}");
                return 1;
            }
            index++;
        }
        output.WriteLine($"smoke {target.Name}: {index} inputs, {accepted} accepted, {rejections.Values.Sum()} refused, " +
                         $"no unexpected exception ({clock.Elapsed.TotalSeconds:F1} s)");
        // Which checks the run reached: a check missing here is one this run did not exercise.
        foreach (var (rule, times) in rejections.OrderByDescending(r => r.Value).Take(25))
            output.WriteLine($"  {times,7}  {(rule.Length > 150 ? rule[..150] + "..." : rule)}");
        return 0;
    }

    [GeneratedRegex(@"0x[0-9a-f]+|\d+")]
    private static partial Regex Numbers();
}
