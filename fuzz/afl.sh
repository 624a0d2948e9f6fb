#!/usr/bin/env bash
# Runs one fuzz target under AFL++ for a while and prints what it found.
# Installs AFL++ and the SharpFuzz instrumenter when they are missing, publishes the harness once and
# instruments vmm's core assembly in it, and seeds the corpus from the target's own generator.
#
#   fuzz/afl.sh TARGET [SECONDS] [OUTPUT_DIR]
#
# TARGET: virtqueue, migration, standby, state, bzimage, elf, options or config. SECONDS: 600 by default.
# Findings land in OUTPUT_DIR (default /tmp/vmm-afl/TARGET); reproduce a crash with
#   dotnet run --project fuzz/Vmm.Fuzz -c Release -- --replay TARGET OUTPUT_DIR/findings/default/crashes/FILE
set -euo pipefail
target=${1:?usage: fuzz/afl.sh TARGET [SECONDS] [OUTPUT_DIR]}
seconds=${2:-600}
out=${3:-/tmp/vmm-afl/$target}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

command -v afl-fuzz >/dev/null || { apt-get update -qq && apt-get install -y -qq afl++; }
sharpfuzz=$HOME/.dotnet/tools/sharpfuzz
[[ -x $sharpfuzz ]] || dotnet tool install --global SharpFuzz.CommandLine --version 2.3.0

# One build, shared by runs of every target (published under a lock: runs may start together): plain/ writes
# the seed corpus, afl/ has vmm's core assembly instrumented (its code then needs AFL's shared memory to run).
build=/tmp/vmm-afl/build-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo local)
(
    flock 9
    if [[ ! -f $build/.instrumented ]]; then
        rm -rf "$build"
        dotnet publish "$root/fuzz/Vmm.Fuzz" -c Release -o "$build/plain" -v quiet -nologo
        cp -r "$build/plain" "$build/afl"
        "$sharpfuzz" "$build/afl/Vmm.Core.dll"
        touch "$build/.instrumented"
    fi
) 9>/tmp/vmm-afl.lock

mkdir -p "$out"
rm -rf "$out/corpus" "$out/findings"
"$build/plain/Vmm.Fuzz" --write-corpus "$target" "$out/corpus" 64 >/dev/null
# The .NET apphost carries no AFL instrumentation of its own (SKIP_BIN_CHECK); a build VM cannot set the
# CPU governor or core_pattern (SKIP_CPUFREQ, ..._MISSING_CRASHES).
AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
    afl-fuzz -V "$seconds" -i "$out/corpus" -o "$out/findings" -t 5000 -m none -- "$build/afl/Vmm.Fuzz" "$target" >"$out/afl.log" 2>&1 || true

stats=$out/findings/default/fuzzer_stats
[[ -f $stats ]] || { echo "afl: $target: no fuzzer_stats; see $out/afl.log" >&2; tail -20 "$out/afl.log" >&2; exit 1; }
field() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
echo "afl: $target: $(field run_time) s, $(field execs_done) executions ($(field execs_per_sec)/s), corpus $(field corpus_count)," \
     "edges $(field edges_found)/$(field total_edges) ($(field bitmap_cvg)), crashes $(field saved_crashes), hangs $(field saved_hangs)"
