using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Vmm.Fuzz;

/// <summary>The fuzz target over generated inputs, in-process and bounded: CI's check that nothing but
/// a VirtqueueException escapes, without AFL or libFuzzer.</summary>
public static partial class SmokeRun
{
    /// <summary>Returns the process exit code: 0, or 1 after saving the first failing input to the
    /// current directory for <c>--replay</c>.</summary>
    public static int Run(int count, int seed, TextWriter output)
    {
        var clock = Stopwatch.StartNew();
        int index = 0;
        long chains = 0;
        var rejections = new Dictionary<string, int>();
        foreach (byte[] input in FuzzInputGenerator.Generate(count, seed))
        {
            try
            {
                var result = VirtqueueFuzzTarget.Run(input);
                chains += result.ChainsCompleted;
                if (result.Rejection is { } message)
                {
                    string rule = Numbers().Replace(message, "#");
                    rejections[rule] = rejections.GetValueOrDefault(rule) + 1;
                }
            }
            catch (Exception error)
            {
                string file = $"smoke-failure-seed{seed}-{index}.bin";
                File.WriteAllBytes(file, input);
                output.WriteLine($"smoke: input {index} (seed {seed}) threw {error}");
                output.WriteLine($"smoke: saved as {file}; reproduce with --replay {file}");
                return 1;
            }
            index++;
        }
        output.WriteLine($"smoke: {index} inputs, {chains} chains completed, {rejections.Values.Sum()} rejected by the queue, " +
                         $"no unexpected exception ({clock.Elapsed.TotalSeconds:F1} s)");
        // Which rules the run reached: a rule missing here is a check this run did not exercise.
        foreach (var (rule, times) in rejections.OrderByDescending(r => r.Value))
            output.WriteLine($"  {times,7}  {rule}");
        return 0;
    }

    [GeneratedRegex(@"0x[0-9a-f]+|\d+")]
    private static partial Regex Numbers();
}
