#!/usr/bin/env bash
# One command from a fresh clone to every test: installs what is missing, builds the guest images
# (cached; the first build takes several minutes), checks that vmm publishes as one NativeAOT binary
# that parses its options, snapshots, restores and migrates, then runs all tests, the Linux boots included.
# Arguments go to `dotnet test` (e.g. --filter "Category!=LinuxBoot" for the fast inner loop).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh
guest-images/build.sh >/dev/null

# The shipped form of vmm is a NativeAOT binary: prove it still builds and runs.
aot=$(mktemp -d)
trap 'rm -rf "$aot"' EXIT
dotnet publish src/Vmm.Cli -c Release -r linux-x64 -o "$aot" -v quiet -nologo >&2
"$aot/vmm" --version
"$aot/vmm" run --help >/dev/null
set +e; "$aot/vmm" run >/dev/null 2>&1; rc=$?; set -e
[[ $rc == 2 ]] || { echo "test: the NativeAOT vmm exited $rc on a missing --kernel, expected 2" >&2; exit 1; }
scripts/aot-smoke.sh "$aot/vmm"

# Every fuzz target (virtqueue, migration stream, standby stream, state, bzImage, ELF, options) over generated inputs,
# in-process, no fuzzer needed (fuzz/README.md).
dotnet run --project fuzz/Vmm.Fuzz -c Release -- --smoke 20000

# The run's log is kept, and a failed run ends by repeating each failed test with its message and stack: whoever reads
# only the end of a long CI log still sees what failed (a test host that crashed says so there too).
log=$(mktemp)
trap 'rm -rf "$aot" "$log"' EXIT
set +e
dotnet test Vmm.sln -c Release --logger "console;verbosity=normal" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if [[ $rc != 0 ]]; then
    echo "=== test.sh: the run failed (exit $rc); what failed, again:"
    awk '/^  Failed /{show=1} /^  Passed |^  Skipped /{show=0} show' "$log" | head -300
    grep -E "Test host process crashed|Unhandled exception|The active test run was aborted" -A25 "$log" | head -80
fi
exit "$rc"
