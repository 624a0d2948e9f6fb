#!/usr/bin/env bash
# Replication to a hot standby (vmm ctl replicate / vmm standby) on loopback, with the CPL3 dirtying guest
# (firmware/FirmwareGuests.DirtyMemoryWithChecksum: a 256 MiB region of random data, written at a set rate by
# native-speed CPL3 code, checked every 100 ms tick):
#   1. at 50 MiB/s, for epochs of 25, 50, 100 and 200 ms: the guest's pause per epoch (from the primary's debug
#      log, every epoch of a WINDOW-second window), pages per epoch, the commit latency, and how long its console
#      output was held (status: outputDelayAverageMs / outputDelayMaxMs: the latency added to its output, console
#      and network alike);
#   2. as fast as it can (2000 MiB/s asked): the write rate it achieves (ticks completed x pages per tick) without
#      replication and with each epoch length: what dirty tracking and the pauses cost it;
#   3. failover: the primary killed with SIGKILL (interval 100 ms, --failover-timeout-ms 1000, a fence command that
#      succeeds at once): kill to the standby's "failover:" line (timeout included), the time the standby itself
#      logs from fencing to the VM resumed (timeout excluded), and kill to the guest's first tick on the standby.
# Usage: [WINDOW=10] [RUNS=3] bench/replication.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
window=${WINDOW:-10}
runs=${RUNS:-3}
out=$(mktemp -d)
cleanup() {
    local pid
    for pid in $(jobs -p); do
        [[ $(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ') == "$$" ]] && kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "replication.sh: $*" >&2; exit 1; }

wait_for() { # file text seconds [pid that must stay alive]
    for _ in $(seq $(( $3 * 100 ))); do
        grep -aq "$2" "$1" 2>/dev/null && return 0
        [[ -n ${4:-} ]] && ! kill -0 "$4" 2>/dev/null && { echo "process $4 exited before '$2' appeared in $1" >&2; cat "$1" >&2; return 1; }
        sleep 0.01
    done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

json_number() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | head -n1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# "median / p95 / max" of the numbers on stdin
stats() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int(NR * 0.95); if (i < 1) i = 1; printf "%.2f / %.2f / %.2f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[i], v[NR] }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

dotnet publish src/Vmm.Cli -c Release -r linux-x64 -o "$out/bin" -v quiet -nologo >/dev/null
vmm=$out/bin/vmm
guest() { # file rate
    dotnet run -c Release --project bench/Vmm.Bench -- write-dirtying-guest "$1" 256 "$2" fill >/dev/null
}
guest "$out/steady.elf" 50
guest "$out/flat-out.elf" 2000
port=$(( 21000 + RANDOM % 1000 ))

# Starts the primary with guest $1; sets primary (its pid).
start_primary() {
    rm -f "$out/api.sock"
    "$vmm" run -v --kernel "$1" --memory 288M --name bench --api-socket "$out/api.sock" >"$out/primary.out" 2>"$out/primary.log" &
    primary=$!
    wait_for "$out/primary.out" "tick 00000003" 120 "$primary" || fail "the guest did not start"
}

# Starts a standby and replicates the primary to it with epochs of $1 ms; extra standby options follow.
start_replication() {
    local interval=$1; shift
    port=$(( port + 1 ))
    rm -rf "$out/standby-disks"; mkdir -p "$out/standby-disks"
    "$vmm" standby --listen 127.0.0.1:$port --disk-dir "$out/standby-disks" --api-socket "$out/standby.sock" "$@" \
        >"$out/standby.out" 2>"$out/standby.log" &
    standby=$!
    wait_for "$out/standby.log" "waiting for a primary" 30 "$standby" || fail "the standby did not start"
    "$vmm" ctl --socket "$out/api.sock" replicate --to 127.0.0.1:$port --interval-ms "$interval" >"$out/replicate.out" ||
        { cat "$out/replicate.out" "$out/primary.log" "$out/standby.log" >&2; fail "replicate failed"; }
}

stop_all() {
    kill -KILL "$primary" ${standby:+"$standby"} 2>/dev/null || true
    wait "$primary" 2>/dev/null || true
    [[ -n ${standby:-} ]] && { wait "$standby" 2>/dev/null || true; }
    standby=
}

ticks() { grep -ac "^tick" "$out/primary.out" || true; }

# Ticks the guest completes in the window (after replication is in its stride: 2 s after protection).
measure_ticks() {
    sleep 2
    local before after
    before=$(ticks)
    sleep "$window"
    after=$(ticks)
    echo $(( after - before ))
}

echo "== 1. 50 MiB/s guest: pause per epoch (median / p95 / max over a ${window} s window)"
echo
echo "| epoch | pause per epoch (ms) | pages per epoch (median) | commit latency (ms, median) | output held (ms, average / max) |"
echo "|---|---|---|---|---|"
for interval in 25 50 100 200; do
    start_primary "$out/steady.elf"
    start_replication "$interval"
    sleep 2
    from=$(grep -ac "epoch .* committed: pause" "$out/primary.log" || true)
    sleep "$window"
    status=$("$vmm" ctl --socket "$out/api.sock" status)
    epochs=$(tail -n +$(( from + 1 )) "$out/primary.log" | grep -a "epoch .* committed: pause")
    pause=$(sed -n 's/.*pause \([0-9.]*\) ms.*/\1/p' <<<"$epochs" | stats)
    pages=$(sed -n 's/.*ms, \([0-9]*\) pages.*/\1/p' <<<"$epochs" | median)
    commit=$(sed -n 's/.*commit \([0-9.]*\) ms.*/\1/p' <<<"$epochs" | median)
    echo "| $interval ms | $pause | $pages | $commit | $(json_number outputDelayAverageMs <<<"$status") / $(json_number outputDelayMaxMs <<<"$status") |"
    stop_all
done
echo

echo "== 2. the guest as fast as it can: write rate achieved (ticks of 51200 pages = 200 MiB in ${window} s)"
echo "   and where each epoch's time went in that window (primary's debug log; CPU seconds per thread from /proc)"
echo
echo "| replication | ticks | MiB/s written | relative | epochs in the window | pause (median) | pages per epoch (median) | commit (median) | CPU s: vcpu0, replication, standby |"
echo "|---|---|---|---|---|---|---|---|---|"
start_primary "$out/flat-out.elf"
base=$(measure_ticks)
stop_all
echo "| none | $base | $(( base * 200 / window )) | 1.00 | | | | | |"
# CPU seconds (user+system) of thread $2 of process $1 so far (0 when gone).
thread_seconds() {
    local task
    for task in /proc/$1/task/*; do
        [[ $(cat "$task/comm" 2>/dev/null) == "$2" ]] && awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); printf "%.2f\n", (f[12] + f[13]) / 100 }' "$task/stat" && return
    done
    echo 0
}
for interval in 25 50 100 200; do
    start_primary "$out/flat-out.elf"
    start_replication "$interval"
    sleep 2
    from=$(grep -ac "epoch .* committed: pause" "$out/primary.log" || true)
    cpu0=("$(thread_seconds "$primary" vcpu0)" "$(thread_seconds "$primary" replication)" "$(thread_seconds "$standby" standby-receive)")
    before=$(ticks)
    sleep "$window"
    n=$(( $(ticks) - before ))
    cpu1=("$(thread_seconds "$primary" vcpu0)" "$(thread_seconds "$primary" replication)" "$(thread_seconds "$standby" standby-receive)")
    epochs=$(tail -n +$(( from + 1 )) "$out/primary.log" | grep -a "epoch .* committed: pause")
    stop_all
    cpu=$(awk -v a="${cpu0[*]}" -v b="${cpu1[*]}" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.1f, %.1f, %.1f", y[1] - x[1], y[2] - x[2], y[3] - x[3] }')
    echo "| epochs of $interval ms | $n | $(( n * 200 / window )) | $(awk -v a="$n" -v b="$base" 'BEGIN { printf "%.2f", b ? a / b : 0 }') |" \
         "$(grep -c . <<<"$epochs") | $(sed -n 's/.*pause \([0-9.]*\) ms.*/\1/p' <<<"$epochs" | median) ms | $(sed -n 's/.*ms, \([0-9]*\) pages.*/\1/p' <<<"$epochs" | median) |" \
         "$(sed -n 's/.*commit \([0-9.]*\) ms.*/\1/p' <<<"$epochs" | median) ms | $cpu |"
done
echo

echo "== 3. failover: the primary killed with SIGKILL (epochs of 100 ms, --failover-timeout-ms 1000, fence: true)"
echo
echo "| run | kill to failover line (ms) | fencing to resumed, as the standby logs it (ms) | kill to the guest's first tick on the standby (ms) | epoch resumed, its age (ms) |"
echo "|---|---|---|---|---|"
for run in $(seq "$runs"); do
    start_primary "$out/steady.elf"
    start_replication 100 --fence-command true --failover-timeout-ms 1000 --serial-log "$out/standby-console"
    sleep 2
    killed=$(now_ms)
    kill -KILL "$primary"
    wait_for "$out/standby.log" "failover: VM" 30 "$standby" || fail "no failover"
    failed_over=$(now_ms)
    wait_for "$out/standby-console" "tick" 30 "$standby" || fail "the guest did not run on the standby"
    ticking=$(now_ms)
    line=$(grep -a "failover: VM" "$out/standby.log")
    resumed=$(sed -n 's/.*, in \([0-9.]*\) ms.*/\1/p' <<<"$line")
    epoch=$(sed -n 's/.*from epoch \([0-9]*\), committed \([0-9]*\) ms.*/\1, \2/p' <<<"$line")
    echo "| $run | $(( failed_over - killed )) | $resumed | $(( ticking - killed )) | $epoch |"
    ! grep -a "mismatch\|FAULT" "$out/standby-console" || fail "the guest found its memory changed on the standby"
    stop_all
    rm -f "$out/standby-console"
done
