#!/usr/bin/env bash
# Live migration of a 1 GiB guest between two NativeAOT vmm processes on loopback TCP: total time,
# downtime (source pause to the target's "it runs here"), data sent and passes, for each scenario.
# The guest is firmware/FirmwareGuests.DirtyMemoryWithChecksum: a 1 GiB region, random or zero,
# written at a set rate by native-speed CPL3 code. Each scenario runs RUNS times (default 3).
# The last scenarios repeat two of the first over mutual TLS (scripts/tls-certs.sh certificates).
# Usage: [RUNS=N] [SOURCE_OPTS=--dirty-ring] [SCENARIOS=regex] bench/migration.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
runs=${RUNS:-3}
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
dotnet publish src/Vmm.Cli -c Release -r linux-x64 -o "$out/bin" -v quiet -nologo >/dev/null
vmm=$out/bin/vmm

wait_for() { # file text seconds
    for _ in $(seq $(( $3 * 10 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

tls=()
scenario() { # name content rate [ctl options...]
    local name=$1 content=$2 rate=$3; shift 3
    [[ $name =~ ${SCENARIOS:-.} ]] || return 0
    dotnet run -c Release --project bench/Vmm.Bench -- write-dirtying-guest "$out/guest.elf" 1024 "$rate" "$content" >/dev/null
    for run in $(seq "$runs"); do
        local port=$(( 17000 + RANDOM % 1000 ))
        "$vmm" migrate-receive --listen 127.0.0.1:$port --once "${tls[@]}" >"$out/target.out" 2>"$out/target.log" &
        local target=$!
        wait_for "$out/target.log" "waiting for migrations" 30
        "$vmm" run --kernel "$out/guest.elf" --memory 1056M --api-socket "$out/api.sock" ${SOURCE_OPTS:-} >"$out/source.out" 2>"$out/source.log" &
        local source=$!
        wait_for "$out/source.out" "tick 00000003" 120
        "$vmm" ctl --socket "$out/api.sock" migrate --to 127.0.0.1:$port "${tls[@]}" "$@" >"$out/ctl.out" || true
        wait "$source" || true
        wait_for "$out/target.out" "tick" 30
        kill -TERM "$target"; wait "$target" || true
        local passes bandwidth
        passes=$(grep -c '"event":"pass"' "$out/ctl.out" || true)
        bandwidth=$(grep -m1 '"event":"pass"' "$out/ctl.out" | sed -n 's/.*"bandwidthMiBps":\([0-9.]*\).*/\1/p')
        tail -n1 "$out/ctl.out" | sed -e "s|^|$name run $run: |" -e "s|\$| (passes reported: $passes, first pass at $bandwidth MiB/s)|"
    done
}

# The floor this machine sets: the target must touch 1 GiB of fresh memory (dd's buffer here).
TIMEFORMAT=%R
echo "first touch of 1 GiB of fresh anonymous memory on this machine: $( { time dd if=/dev/zero of=/dev/null bs=1G count=1 2>/dev/null; } 2>&1 ) s (dd bs=1G)"
scenario "1 GiB random, idle" fill 0
scenario "1 GiB zero, idle" zero 0
scenario "1 GiB random, 100 MiB/s dirty" fill 100
scenario "1 GiB random, 400 MiB/s dirty" fill 400
scenario "1 GiB random, 1000 MiB/s dirty, auto-converge" fill 1000 --auto-converge --max-passes 60

# Mutual TLS: one identity for both ends, as both run here.
"$root/scripts/tls-certs.sh" "$out/tls" 127.0.0.1
tls=(--tls-dir "$out/tls/127.0.0.1")
scenario "1 GiB random, idle, mutual TLS" fill 0
scenario "1 GiB random, 400 MiB/s dirty, mutual TLS" fill 400
