#!/usr/bin/env bash
# Runs the trimmed NativeAOT vmm through a snapshot, a restore and three live migrations over loopback,
# plain, mutual TLS, and copying a disk image (into a paused, named VM listed by the daemon), with the
# memory-dirtying firmware guest: the tests run vmm under the JIT, and
# trimming must not have removed anything these paths need (TLS also needs libssl at run time).
# Usage: scripts/aot-smoke.sh PATH/TO/vmm
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

start_target() { # name [migrate-receive options...]; sets port
    local name=$1; shift
    # Port 0: the daemon picks a free port and logs it.
    "$vmm" migrate-receive --listen 127.0.0.1:0 --once "$@" >"$work/$name.out" 2>"$work/$name.log" &
    wait_for "$work/$name.log" "waiting for migrations"
    port=$(sed -n 's/.*waiting for migrations on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/$name.log")
}
start_source() { # name [run options...]
    local name=$1; shift
    "$vmm" run --kernel "$work/guest.elf" --memory 48M --api-socket "$work/$name.sock" "$@" >"$work/$name.out" 2>"$work/$name.log" &
    wait_for "$work/$name.out" "tick 00000002"
}
# The migrated guest goes on ticking on the target from where the source left it. The source may have printed
# part of a line when it paused (the target prints the rest), so the tick awaited is two past its last whole one.
check_continues() { # source target
    local last next
    last=$(grep -a '^tick [0-9a-f]\{8\}$' "$work/$1.out" | tail -n1 | cut -d' ' -f2)
    next=$(printf 'tick %08x' $(( 16#$last + 2 )))
    wait_for "$work/$2.out" "$next"
}

start_target target
target=$!
start_source source
source=$!

"$vmm" ctl --socket "$work/source.sock" snapshot "$work/snap" >"$work/snapshot.out" || fail "snapshot failed"
"$vmm" run --restore "$work/snap" >"$work/restored.out" 2>"$work/restored.log" &
restored=$!
wait_for "$work/restored.out" "tick"
kill -TERM "$restored"; wait "$restored" || true

"$vmm" ctl --socket "$work/source.sock" migrate --to 127.0.0.1:$port --force >"$work/migrate.out" || fail "migration failed"
wait "$source" || fail "the source did not exit 0 after migrating"
check_continues source target
kill -TERM "$target"; wait "$target" || true

"$root/scripts/tls-certs.sh" "$work/tls" 127.0.0.1
start_target tls-target --tls-dir "$work/tls/127.0.0.1"
target=$!
start_source tls-source
source=$!
"$vmm" ctl --socket "$work/tls-source.sock" migrate --to 127.0.0.1:$port --force --tls-dir "$work/tls/127.0.0.1" >"$work/tls-migrate.out" || fail "TLS migration failed"
wait "$source" || fail "the TLS source did not exit 0 after migrating"
grep -q "mutual TLS (Tls13)" "$work/tls-target.log" || fail "the TLS target did not log a TLS 1.3 session"
check_continues tls-source tls-target
kill -TERM "$target"; wait "$target" || true
mkdir "$work/images"
head -c 1M /dev/urandom >"$work/disk.img"
truncate -s 8M "$work/disk.img"
start_target disk-target --disk-dir "$work/images" --paused --api-socket "$work/{name}.vm.sock" --control-socket "$work/daemon.sock"
target=$!
start_source disk-source --disk "$work/disk.img" --name smoke-vm
source=$!
"$vmm" ctl --socket "$work/disk-source.sock" migrate --to 127.0.0.1:$port --force --copy-disks >"$work/disk-migrate.out" || fail "storage migration failed"
wait "$source" || fail "the source did not exit 0 after a storage migration"
cmp "$work/disk.img" "$work/images/disk.img" || fail "the copied disk image differs"
"$vmm" ctl --socket "$work/daemon.sock" list >"$work/list.out" || fail "the daemon did not list its VMs"
grep -q '"name":"smoke-vm","migration":1,"state":"paused"' "$work/list.out" || fail "the daemon's list lacks the paused smoke-vm: $(cat "$work/list.out")"
"$vmm" ctl --socket "$work/smoke-vm.vm.sock" resume >/dev/null || fail "the received VM did not resume"
check_continues disk-source disk-target
kill -TERM "$target"; wait "$target" || true
echo "aot-smoke: snapshot, restore and live migration (plain, mutual TLS, with a disk copy) work in the NativeAOT binary"
