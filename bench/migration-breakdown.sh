#!/usr/bin/env bash
# Where a live migration's time goes: the 1 GiB random, idle guest of bench/migration.sh migrated between two
# NativeAOT vmm processes on loopback, RUNS times (default 3), each with both sides' debug logs, which break each
# pass down (source: reading guest RAM into frames, waiting for the writer, checksums, socket writes; target:
# socket reads, which hold the kernel's copy and the first touch of guest RAM, checksums, the rest), and the CPU
# time each thread of both processes used during the migration (from /proc). With PERF=1 and perf installed, the
# target is also sampled (perf record -e cpu-clock) and its top symbols printed.
# Usage: [RUNS=N] [PERF=1] bench/migration-breakdown.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
runs=${RUNS:-3}
out=$(mktemp -d)
cleanup() {
    local pid
    for pid in $(jobs -p); do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # file text
    for _ in $(seq 1200); do grep -aq "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

# Per thread of process $1: its name and its user+system CPU time so far, in clock ticks (10 ms).
thread_cpu() {
    for task in /proc/$1/task/*; do
        awk '{ s = $0; sub(/^[0-9]+ \(/, "", s); name = substr(s, 1, index(s, ") ") - 1); gsub(/ /, "_", name)
               sub(/^.*\) /, "", s); split(s, f, " "); print name, f[12] + f[13] }' "$task/stat" 2>/dev/null
    done | awk '{ t[$1] += $2 } END { for (n in t) print n, t[n] }' | sort
}

dotnet publish src/Vmm.Cli -c Release -r linux-x64 -o "$out/bin" -v quiet -nologo >/dev/null
dotnet run -c Release --project bench/Vmm.Bench -- write-dirtying-guest "$out/guest.elf" 1024 0 fill >/dev/null
vmm=$out/bin/vmm
TIMEFORMAT=%R
echo "first touch of 1 GiB of fresh anonymous memory on this machine: $( { time dd if=/dev/zero of=/dev/null bs=1G count=1 2>/dev/null; } 2>&1 ) s (dd bs=1G)"

for run in $(seq "$runs"); do
    port=$((17000 + RANDOM % 1000))
    "$vmm" migrate-receive --listen 127.0.0.1:$port --once -v >"$out/target.out" 2>"$out/target.log" &
    target=$!
    wait_for "$out/target.log" "waiting for migrations"
    "$vmm" run --kernel "$out/guest.elf" --memory 1056M --api-socket "$out/api.sock" -v >"$out/source.out" 2>"$out/source.log" &
    source=$!
    wait_for "$out/source.out" "tick 00000003"
    perf_pid=
    if [[ ${PERF:-} == 1 ]] && command -v perf >/dev/null; then
        perf record -e cpu-clock -F 2000 -g -o "$out/perf.data" -p "$target" >/dev/null 2>"$out/perf.log" &
        perf_pid=$!
        sleep 2 # perf takes a moment to attach to every thread
    fi
    thread_cpu "$source" >"$out/source.cpu0"; thread_cpu "$target" >"$out/target.cpu0"
    # The target's receiving thread ends with the migration: sample it while it runs, keep each thread's last figure.
    ( while sleep 0.2; do thread_cpu "$target" >>"$out/target.samples"; thread_cpu "$source" >"$out/source.cpu1.tmp" && mv "$out/source.cpu1.tmp" "$out/source.cpu1"; done ) &
    sampler=$!
    "$vmm" ctl --socket "$out/api.sock" migrate --to 127.0.0.1:$port >"$out/ctl.out"
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    thread_cpu "$target" >>"$out/target.samples"
    awk '{ last[$1] = $2 } END { for (n in last) print n, last[n] }' "$out/target.samples" | sort >"$out/target.cpu1"
    wait "$source" || true
    wait_for "$out/target.out" "tick"
    [[ -n $perf_pid ]] && { kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; }
    kill -TERM "$target"; wait "$target" || true
    echo "== run $run: $(tail -n1 "$out/ctl.out")"
    grep -h "migration pass [0-9]* took\|pass [0-9]* received on\|downtime .* = " "$out/source.log" "$out/target.log" | sed 's/^vmm: /  /'
    for side in source target; do
        echo "  CPU seconds per thread during the migration, $side (threads above 0.05 s):"
        join -a2 "$out/$side.cpu0" "$out/$side.cpu1" | awk 'NF == 3 { d = $3 - $2 } NF == 2 { d = $2 } d > 5 { printf "    %-20s %.2f\n", $1, d / 100 }'
    done
    if [[ -n $perf_pid ]]; then
        echo "  the target's receiving thread, its top symbols (perf, cpu-clock):"
        perf report -i "$out/perf.data" --comms migration-1 --percentage relative --no-children --sort symbol --stdio -g none 2>>"$out/perf.log" | grep -E '^ +[0-9.]+%' | head -8 | sed "s/^ */    /" || cat "$out/perf.log"
    fi
    rm -f "$out/target.samples" "$out/api.sock"
done
