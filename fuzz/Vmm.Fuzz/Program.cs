using SharpFuzz;
using Vmm.Fuzz;

// Modes (see fuzz/README.md):
//   (no arguments)            AFL via SharpFuzz's out-of-process runner
//   --libfuzzer               libFuzzer via libfuzzer-dotnet
//   --smoke N [--seed S]      N generated inputs in-process, no fuzzer needed (CI)
//   --write-corpus DIR [N]    N generated inputs as a seed corpus
//   --replay FILE...          run saved inputs (a crash AFL or the smoke run found)
switch (args.FirstOrDefault())
{
    case null:
        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var buffer = new MemoryStream();
            stream.CopyTo(buffer);
            VirtqueueFuzzTarget.Run(buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
        });
        return 0;
    case "--libfuzzer":
        Fuzzer.LibFuzzer.Run(input => VirtqueueFuzzTarget.Run(input));
        return 0;
    case "--smoke" when args.Length >= 2 && int.TryParse(args[1], out int count):
        int seed = args.Length >= 4 && args[2] == "--seed" && int.TryParse(args[3], out int s) ? s : 1;
        return SmokeRun.Run(count, seed, Console.Out);
    case "--write-corpus" when args.Length >= 2:
        Directory.CreateDirectory(args[1]);
        int corpusSize = args.Length >= 3 && int.TryParse(args[2], out int n) ? n : 64;
        int index = 0;
        foreach (byte[] input in FuzzInputGenerator.Generate(corpusSize, seed: 1))
            File.WriteAllBytes(Path.Combine(args[1], $"seed-{index++:D4}.bin"), input);
        Console.WriteLine($"wrote {corpusSize} inputs to {args[1]}");
        return 0;
    case "--replay" when args.Length >= 2:
        foreach (string file in args.Skip(1))
            Console.WriteLine($"{file}: {VirtqueueFuzzTarget.Run(File.ReadAllBytes(file))}");
        return 0;
    default:
        Console.Error.WriteLine("usage: Vmm.Fuzz [--libfuzzer | --smoke N [--seed S] | --write-corpus DIR [N] | --replay FILE...]");
        return 2;
}
