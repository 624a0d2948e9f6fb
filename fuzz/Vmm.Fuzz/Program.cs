using SharpFuzz;
using Vmm.Fuzz;

// Modes (see fuzz/README.md); TARGET is one of the names FuzzTargets lists (virtqueue, migration, ...):
//   TARGET                          AFL via SharpFuzz's out-of-process runner
//   --libfuzzer TARGET              libFuzzer via libfuzzer-dotnet
//   --smoke N [--seed S] [TARGET]   N generated inputs per target (all targets without one), in-process, no fuzzer (CI)
//   --write-corpus TARGET DIR [N]   N generated inputs as a seed corpus
//   --replay TARGET FILE...         run saved inputs (a crash AFL or the smoke run found)
string Usage() => "usage: Vmm.Fuzz TARGET | --libfuzzer TARGET | --smoke N [--seed S] [TARGET] | --write-corpus TARGET DIR [N] | --replay TARGET FILE...\n" +
                  $"targets: {string.Join(", ", FuzzTargets.All.Select(t => t.Name))}";

IFuzzTarget? Target(int index) => args.Length > index ? FuzzTargets.Find(args[index]) : null;

switch (args.FirstOrDefault())
{
    case "--libfuzzer" when Target(1) is { } target:
        Fuzzer.LibFuzzer.Run(input => target.Run(input));
        return 0;
    case "--smoke" when args.Length >= 2 && int.TryParse(args[1], out int count):
    {
        int seed = args.Length >= 4 && args[2] == "--seed" && int.TryParse(args[3], out int s) ? s : 1;
        string? name = args.Length is 3 ? args[2] : args.Length >= 5 ? args[4] : null;
        var targets = name is null ? FuzzTargets.All : FuzzTargets.Find(name) is { } one ? [one] : null;
        if (targets is null)
        {
            Console.Error.WriteLine(Usage());
            return 2;
        }
        foreach (var target in targets)
            if (SmokeRun.Run(target, count, seed, Console.Out) != 0) return 1;
        return 0;
    }
    case "--write-corpus" when args.Length >= 3 && Target(1) is { } target:
    {
        Directory.CreateDirectory(args[2]);
        int corpusSize = args.Length >= 4 && int.TryParse(args[3], out int n) ? n : 64;
        int index = 0;
        foreach (byte[] input in target.Generate(corpusSize, seed: 1))
            File.WriteAllBytes(Path.Combine(args[2], $"seed-{index++:D4}.bin"), input);
        Console.WriteLine($"wrote {corpusSize} {target.Name} inputs to {args[2]}");
        return 0;
    }
    case "--replay" when args.Length >= 3 && Target(1) is { } target:
        foreach (string file in args.Skip(2))
            Console.WriteLine($"{file}: {target.Run(File.ReadAllBytes(file)) ?? "accepted"}");
        return 0;
    case { } name when FuzzTargets.Find(name) is { } target:
        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var buffer = new MemoryStream();
            stream.CopyTo(buffer);
            target.Run(buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
        });
        return 0;
    default:
        Console.Error.WriteLine(Usage());
        return 2;
}
