#!/usr/bin/env bash
# Runs the trimmed NativeAOT vmm through a snapshot, a restore and a live migration (over loopback),
# with the memory-dirtying firmware guest: the tests run vmm under the JIT, and trimming must not
# have removed anything these paths need. Usage: scripts/aot-smoke.sh PATH/TO/vmm
set -euo pipefail
vmm=$(realpath "$1")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
fail() { echo "aot-smoke: $*" >&2; for f in "$work"/*.log "$work"/*.out; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done; exit 1; }
wait_for() { # file text
    for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    fail "no '$2' in $1"
}

dotnet run -c Release --project "$root/bench/Vmm.Bench" -- write-dirtying-guest "$work/guest.elf" 16 20 fill >/dev/null
# Port 0: the daemon picks a free port and logs it.
"$vmm" migrate-receive --listen 127.0.0.1:0 --once >"$work/target.out" 2>"$work/target.log" &
target=$!
wait_for "$work/target.log" "waiting for migrations"
port=$(sed -n 's/.*waiting for migrations on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/target.log")
"$vmm" run --kernel "$work/guest.elf" --memory 48M --api-socket "$work/api.sock" >"$work/source.out" 2>"$work/source.log" &
source=$!
wait_for "$work/source.out" "tick 00000002"

"$vmm" ctl --socket "$work/api.sock" snapshot "$work/snap" >"$work/snapshot.out" || fail "snapshot failed"
"$vmm" run --restore "$work/snap" >"$work/restored.out" 2>"$work/restored.log" &
restored=$!
wait_for "$work/restored.out" "tick"
kill -TERM "$restored"; wait "$restored" || true

"$vmm" ctl --socket "$work/api.sock" migrate --to 127.0.0.1:$port --force >"$work/migrate.out" || fail "migration failed"
wait "$source" || fail "the source did not exit 0 after migrating"
last=$(grep tick "$work/source.out" | tail -n1 | cut -d' ' -f2)
next=$(printf 'tick %08x' $(( 16#$last + 1 )))
wait_for "$work/target.out" "$next"
kill -TERM "$target"; wait "$target" || true
echo "aot-smoke: snapshot, restore and live migration work in the NativeAOT binary"
