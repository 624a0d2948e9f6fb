#!/usr/bin/env bash
# Live migration of a 1 GiB guest between two NativeAOT vmm processes on loopback TCP: total time,
# downtime (source pause to the target's "it runs here"), data sent and passes, for each scenario.
# The guest is firmware/FirmwareGuests.DirtyMemoryWithChecksum: a 1 GiB region, random or zero,
# written at a set rate by native-speed CPL3 code. Each scenario runs RUNS times (default 3).
#
# Two scenarios run vmm and QEMU 7.2 side by side, alternating (vmm, QEMU, vmm, QEMU, ...), and end with
# a table of medians, ranges and vmm/QEMU ratios:
#   - "1 GiB random, idle, vmm vs QEMU": RAM only;
#   - "1 GiB random + 4 GiB disk, vmm vs QEMU": the same plus a 4 GiB raw image holding 1 GiB of random
#     data (four 256 MiB extents, the rest holes), copied with the VM (vmm --copy-disks, QEMU block
#     migration, migrate -b); each copy is checked with cmp and its allocated size (du) reported.
# QEMU: Debian's qemu-system-x86 (installed if missing), -M microvm -accel kvm -m 1056M, running the same guest
# as vmm (write-dirtying-guest ... pvh: the same code behind a PVH entry that turns on long mode), so both
# fill the same 1 GiB with the same random data, spin on the TSC between ticks, and check their memory each
# tick after they arrive; max-bandwidth raised from 7.2's default of 128 MiB/s. Its figures are its own
# (`info migrate`: total time, downtime, both measured on the source up to the last byte sent) and, to
# compare with vmm's (which end when the target confirms the VM runs), the same ends taken from QMP
# events: MIGRATION "setup" on the source to RESUME on the target, and STOP on the source to RESUME.
# Disk images live in a directory under /dev/shm (IMAGE_DIR to change), so the host disk does not enter the
# figures.
#
# The last scenarios repeat two vmm-only ones over mutual TLS (scripts/tls-certs.sh certificates).
# CONNECTIONS=N migrates vmm over N TCP connections (`vmm ctl migrate --connections N`, default 1).
# Usage: [RUNS=N] [SOURCE_OPTS=--dirty-ring] [SCENARIOS=regex] [IMAGE_DIR=DIR] [CONNECTIONS=N] bench/migration.sh
# (SCENARIOS=QEMU runs the two side-by-side scenarios only.)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
runs=${RUNS:-3}
out=$(mktemp -d)
shm=$(mktemp -d "${IMAGE_DIR:-/dev/shm}/vmm-bench-migration.XXXXXX")
# Ends what this script started and still runs (its own children only: a pid is checked to be one before the
# signal), then removes its files.
cleanup() {
    local pid
    for pid in $(jobs -p); do
        [[ $(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ') == "$$" ]] && kill -TERM "$pid" 2>/dev/null
    done
    wait 2>/dev/null || true
    rm -rf "$out" "$shm"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "migration.sh: $*" >&2; exit 1; }

wait_for() { # file text seconds [pid that must stay alive]
    for _ in $(seq $(( $3 * 10 ))); do
        grep -aq "$2" "$1" 2>/dev/null && return 0
        [[ -n ${4:-} ]] && ! kill -0 "$4" 2>/dev/null && { echo "process $4 exited before '$2' appeared in $1" >&2; cat "$1" >&2; return 1; }
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

selected() { [[ $1 =~ ${SCENARIOS:-.} ]]; }

ram_scenario="1 GiB random, idle, vmm vs QEMU"
disk_scenario="1 GiB random + 4 GiB disk (1 GiB data), idle, vmm vs QEMU"
side_by_side=false
{ selected "$ram_scenario" || selected "$disk_scenario"; } && side_by_side=true

if $side_by_side; then
    need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    command -v socat >/dev/null || need+=(socat)
    if ((${#need[@]})); then
        echo "installing ${need[*]}" >&2
        sudo=; ((EUID)) && sudo=sudo
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
    fi
    qemu_version=$(qemu-system-x86_64 --version | head -n1)
    [[ $qemu_version == *" 7.2"* ]] || echo "note: comparing with $qemu_version, not QEMU 7.2" >&2
    echo "$qemu_version"
fi

dotnet publish src/Vmm.Cli -c Release -r linux-x64 -o "$out/bin" -v quiet -nologo >/dev/null
vmm=$out/bin/vmm

# ---- vmm ----------------------------------------------------------------------------------------------

# One vmm migration of the guest in $out/guest.elf; sets answer to ctl's last answer (a JSON line). (Not
# run in a subshell: the processes it starts must stay known to the EXIT trap.)
# Options after the port go to `vmm run` up to "--", then to `vmm ctl migrate`; DISK_DIR, when set, is the
# target's --disk-dir.
vmm_migrate() { # port [run options...] -- [ctl options...]
    local port=$1; shift
    local run_opts=() ctl_opts=()
    while (($#)) && [[ $1 != -- ]]; do run_opts+=("$1"); shift; done
    (($#)) && shift
    ctl_opts=("$@" --connections "${CONNECTIONS:-1}")
    local target_opts=("${tls[@]}")
    [[ -n ${DISK_DIR:-} ]] && target_opts+=(--disk-dir "$DISK_DIR")
    "$vmm" migrate-receive --listen 127.0.0.1:$port --once "${target_opts[@]}" >"$out/target.out" 2>"$out/target.log" &
    local target=$!
    wait_for "$out/target.log" "waiting for migrations" 30 "$target" || fail "vmm migrate-receive did not start"
    "$vmm" run --kernel "$out/guest.elf" --memory 1056M --api-socket "$out/api.sock" "${run_opts[@]}" ${SOURCE_OPTS:-} \
        >"$out/source.out" 2>"$out/source.log" &
    local source=$!
    wait_for "$out/source.out" "tick 00000003" 120 "$source" || { cat "$out/source.log" >&2; fail "the vmm source did not start its guest"; }
    if ! "$vmm" ctl --socket "$out/api.sock" migrate --to 127.0.0.1:$port "${tls[@]}" "${ctl_opts[@]}" >"$out/ctl.out"; then
        cat "$out/ctl.out" "$out/source.log" "$out/target.log" >&2
        fail "vmm ctl migrate failed"
    fi
    wait "$source" || true
    wait_for "$out/target.out" "tick" 30 "$target" || fail "the guest did not run on the vmm target"
    ! grep -a "mismatch\|FAULT" "$out/target.out" || fail "the guest found its memory changed on the vmm target"
    kill -TERM "$target"; wait "$target" || true
    answer=$(tail -n1 "$out/ctl.out")
}

json_number() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }

# ---- QEMU ---------------------------------------------------------------------------------------------

# -cpu host is refused on this kvm_pvm host (KVM will not set MSR 0x10a, IA32_ARCH_CAPABILITIES): the default
# CPU model it is.
qemu_common=(-M microvm -accel kvm -smp 1 -m 1056M -nodefaults -nographic)

hmp() { # socket command: the answer, without the monitor's echo and prompts
    printf '%s\n' "$2" | socat -t 1 - "UNIX-CONNECT:$1" | tr -d '\r' | sed 's/\x1b\[[0-9]*[A-Z]//g' |
        { grep -av '^(qemu)\|^QEMU [0-9]' || true; }
}

# Keeps a QMP session open on socket $1 that logs every event into file $2.
qmp_log() {
    [[ -f $out/qmp-session.sh ]] || printf '%s\n' "echo '{\"execute\":\"qmp_capabilities\"}'" 'exec cat >&2' >"$out/qmp-session.sh"
    socat "UNIX-CONNECT:$1" EXEC:"sh $out/qmp-session.sh" 2>"$2" &
    wait_for "$2" '"return"' 10 || fail "no QMP session on $1"
}

# The time of QMP event $2 (with data text $3) in log $1, in ms since the epoch.
event_ms() {
    local line
    line=$(grep -a "\"event\": \"$2\"" "$1" | grep -a -- "${3:-}" | head -n1) || true
    [[ -n $line ]] || { cat "$1" >&2; fail "no QMP event $2 ${3:-} in $1"; }
    sed -n 's/.*"seconds": \([0-9]*\), "microseconds": \([0-9]*\).*/\1 \2/p' <<<"$line" | awk '{ printf "%.3f", $1 * 1000 + $2 / 1000 }'
}

# Starts a QEMU on $out/guest-pvh.elf; its HMP and QMP sockets are $out/$name.hmp and $name.qmp, its events go
# to $out/$name.events, its serial port (the guest's "tick" lines) to $out/$name.serial.
qemu_start() { # name [qemu options...]
    local name=$1; shift
    rm -f "$out/$name.hmp" "$out/$name.qmp" "$out/$name.serial"
    qemu-system-x86_64 "${qemu_common[@]}" -kernel "$out/guest-pvh.elf" -serial "file:$out/$name.serial" \
        -monitor "unix:$out/$name.hmp,server,nowait" -qmp "unix:$out/$name.qmp,server,nowait" "$@" >"$out/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do [[ -S $out/$name.qmp && -S $out/$name.hmp ]] && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    [[ -S $out/$name.qmp ]] || { cat "$out/$name.log" >&2; fail "QEMU ($name) did not start"; }
    qmp_log "$out/$name.qmp" "$out/$name.events"
    eval "${name}_pid=$pid"
}

# One QEMU migration; sets figures to "total downtime e2e_total e2e_downtime" in ms (no subshell, as above).
qemu_migrate() { # port block(true|false) source-image destination-image
    local port=$1 block=$2 src_img=${3:-} dst_img=${4:-}
    local src_disk=() dst_disk=()
    if $block; then
        src_disk=(-drive "file=$src_img,format=raw,if=none,id=d0" -device virtio-blk-device,drive=d0)
        dst_disk=(-drive "file=$dst_img,format=raw,if=none,id=d0,discard=unmap" -device virtio-blk-device,drive=d0)
    fi
    qemu_start dst "${dst_disk[@]}" -incoming "tcp:127.0.0.1:$port"
    qemu_start src "${src_disk[@]}"
    wait_for "$out/src.serial" "tick 00000003" 120 "$src_pid" || fail "the QEMU source did not start its guest"
    hmp "$out/src.hmp" "migrate_set_parameter max-bandwidth 100G" >/dev/null
    hmp "$out/src.hmp" "migrate_set_capability events on" >/dev/null
    # Block migration sends every block of the image; with zero-blocks, an all-zero block goes as a flag and
    # the target (discard=unmap) punches it as a hole instead of writing zeros: QEMU's best for a sparse image.
    $block && hmp "$out/src.hmp" "migrate_set_capability zero-blocks on" >/dev/null
    local flags=-d
    $block && flags="-d -b"
    hmp "$out/src.hmp" "migrate $flags tcp:127.0.0.1:$port" >/dev/null
    local info=
    for _ in $(seq 600); do
        info=$(hmp "$out/src.hmp" "info migrate")
        grep -aq "Migration status: \(completed\|failed\|cancelled\)" <<<"$info" && break
        sleep 0.2
    done
    grep -aq "Migration status: completed" <<<"$info" || { echo "$info" >&2; cat "$out/src.log" "$out/dst.log" >&2; fail "QEMU migration did not complete"; }
    # "completed" shows a moment before the total time is filled in.
    for _ in $(seq 20); do grep -aq "^total time: [1-9]" <<<"$info" && break; sleep 0.1; info=$(hmp "$out/src.hmp" "info migrate"); done
    grep -aq "^total time: [1-9]" <<<"$info" || { echo "$info" >&2; fail "QEMU reported no total time"; }
    for _ in $(seq 100); do grep -aq '"RESUME"' "$out/dst.events" && break; sleep 0.1; done
    grep -aq '"RESUME"' "$out/dst.events" || { cat "$out/dst.events" "$out/dst.log" >&2; fail "the guest did not run on the QEMU target"; }
    wait_for "$out/dst.serial" "tick" 30 "$dst_pid" || fail "the guest did not run on the QEMU target"
    ! grep -a "mismatch\|FAULT" "$out/dst.serial" || fail "the guest found its memory changed on the QEMU target"
    local total downtime setup stop resume
    throughput=$(sed -n 's/^throughput: \([0-9.]*\) mbps.*/\1/p' <<<"$info")
    total=$(sed -n 's/^total time: \([0-9]*\) ms.*/\1/p' <<<"$info")
    downtime=$(sed -n 's/^downtime: \([0-9]*\) ms.*/\1/p' <<<"$info")
    setup=$(event_ms "$out/src.events" MIGRATION '"setup"')
    stop=$(event_ms "$out/src.events" STOP)
    resume=$(event_ms "$out/dst.events" RESUME)
    hmp "$out/src.hmp" quit >/dev/null || true
    hmp "$out/dst.hmp" quit >/dev/null || true
    wait "$src_pid" "$dst_pid" 2>/dev/null || true
    figures="$total $downtime $(awk -v a="$setup" -v b="$resume" 'BEGIN { printf "%.1f", b - a }') $(awk -v a="$stop" -v b="$resume" 'BEGIN { printf "%.1f", b - a }')"
}

# ---- side by side -------------------------------------------------------------------------------------

# Appends value $3 to the series $1/$2 (scenario key / metric).
record() { mkdir -p "$out/results/$1"; echo "$3" >>"$out/results/$1/$2"; }

# "median (min-max)" of a series, with unit conversion: ms or s.
summary() { # key metric unit
    sort -g "$out/results/$1/$2" | awk -v unit="$3" '
        { v[NR] = $1 }
        END {
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            d = unit == "s" ? 1000 : 1; f = unit == "s" ? "%.2f" : "%.1f"
            printf f " " unit " (" f "-" f ")", m / d, v[1] / d, v[NR] / d
        }'
}
median() { sort -g "$out/results/$1/$2" | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$(median "$1" "$2")" -v b="$(median "$1" "$3")" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

side_by_side() { # key name disk(true|false)
    local key=$1 name=$2 disk=$3
    selected "$name" || return 0
    echo "== $name"
    dotnet run -c Release --project bench/Vmm.Bench -- write-dirtying-guest "$out/guest.elf" 1024 0 fill >/dev/null
    dotnet run -c Release --project bench/Vmm.Bench -- write-dirtying-guest "$out/guest-pvh.elf" 1024 0 fill pvh >/dev/null
    local image=$shm/source/disk.img
    if $disk && [[ ! -f $image ]]; then
        mkdir -p "$shm/source" "$shm/vmm-target" "$shm/qemu-target"
        truncate -s 4G "$image"
        for extent in 0 1 2 3; do
            dd if=/dev/urandom of="$image" bs=1M count=256 seek=$(( extent * 1024 )) conv=notrunc status=none
        done
    fi
    for run in $(seq "$runs"); do
        local port
        port=$(( 17000 + RANDOM % 1000 ))
        if $disk; then
            rm -f "$shm/vmm-target/disk.img"
            DISK_DIR=$shm/vmm-target vmm_migrate $port --disk "$image" -- --copy-disks
            cmp "$image" "$shm/vmm-target/disk.img" || fail "vmm's copy of the image differs from the source"
            record "$key" vmm.du "$(du -k "$shm/vmm-target/disk.img" | cut -f1)"
        else
            vmm_migrate $port --
        fi
        echo "vmm  run $run: $answer"
        record "$key" vmm.total "$(json_number totalMs <<<"$answer")"
        record "$key" vmm.downtime "$(json_number downtimeMs <<<"$answer")"

        port=$(( 18000 + RANDOM % 1000 ))
        if $disk; then
            rm -f "$shm/qemu-target/disk.img"; truncate -s 4G "$shm/qemu-target/disk.img"
            qemu_migrate $port true "$image" "$shm/qemu-target/disk.img"
            cmp "$image" "$shm/qemu-target/disk.img" || fail "QEMU's copy of the image differs from the source"
            record "$key" qemu.du "$(du -k "$shm/qemu-target/disk.img" | cut -f1)"
        else
            qemu_migrate $port false
        fi
        read -r total downtime e2e_total e2e_downtime <<<"$figures"
        echo "QEMU run $run: total $total ms, downtime $downtime ms, throughput $throughput Mbit/s (info migrate); to target running: total $e2e_total ms, downtime $e2e_downtime ms"
        record "$key" qemu.total "$total"; record "$key" qemu.downtime "$downtime"
        record "$key" qemu.e2e_total "$e2e_total"; record "$key" qemu.e2e_downtime "$e2e_downtime"
    done
    echo
    echo "| $name | total | downtime |"
    echo "|---|---|---|"
    echo "| vmm | $(summary "$key" vmm.total s) | $(summary "$key" vmm.downtime ms) |"
    echo "| QEMU (info migrate) | $(summary "$key" qemu.total s) | $(summary "$key" qemu.downtime ms) |"
    echo "| QEMU (QMP events, to target RESUME) | $(summary "$key" qemu.e2e_total s) | $(summary "$key" qemu.e2e_downtime ms) |"
    echo "| ratio vmm/QEMU, of the medians | $(ratio "$key" vmm.total qemu.total) (events: $(ratio "$key" vmm.total qemu.e2e_total)) | $(ratio "$key" vmm.downtime qemu.downtime) (events: $(ratio "$key" vmm.downtime qemu.e2e_downtime)) |"
    if $disk; then
        echo "source image: 4 GiB, $(du -k "$image" | cut -f1) KiB allocated; the copies (cmp: identical every run):" \
            "vmm $(sort -u "$out/results/$key/vmm.du" | tr '\n' ' ')KiB, QEMU $(sort -u "$out/results/$key/qemu.du" | tr '\n' ' ')KiB"
    fi
    echo
}

# ---- vmm alone ----------------------------------------------------------------------------------------

tls=()
scenario() { # name content rate [ctl options...]
    local name=$1 content=$2 rate=$3; shift 3
    selected "$name" || return 0
    dotnet run -c Release --project bench/Vmm.Bench -- write-dirtying-guest "$out/guest.elf" 1024 "$rate" "$content" >/dev/null
    for run in $(seq "$runs"); do
        local passes bandwidth
        vmm_migrate $(( 17000 + RANDOM % 1000 )) -- "$@"
        passes=$(grep -c '"event":"pass"' "$out/ctl.out" || true)
        bandwidth=$(grep -m1 '"event":"pass"' "$out/ctl.out" | sed -n 's/.*"bandwidthMiBps":\([0-9.]*\).*/\1/p')
        echo "$name run $run: $answer (passes reported: $passes, first pass at $bandwidth MiB/s)"
    done
}

# The floor this machine sets: the target must touch 1 GiB of fresh memory (dd's buffer here).
TIMEFORMAT=%R
echo "first touch of 1 GiB of fresh anonymous memory on this machine: $( { time dd if=/dev/zero of=/dev/null bs=1G count=1 2>/dev/null; } 2>&1 ) s (dd bs=1G)"
side_by_side ram "$ram_scenario" false
side_by_side disk "$disk_scenario" true
scenario "1 GiB zero, idle" zero 0
scenario "1 GiB random, 100 MiB/s dirty" fill 100
scenario "1 GiB random, 400 MiB/s dirty" fill 400
scenario "1 GiB random, 1000 MiB/s dirty, auto-converge" fill 1000 --auto-converge --max-passes 60

# Mutual TLS: one identity for both ends, as both run here.
if selected "mutual TLS"; then
    "$root/scripts/tls-certs.sh" "$out/tls" 127.0.0.1 >/dev/null
    tls=(--tls-dir "$out/tls/127.0.0.1")
    scenario "1 GiB random, idle, mutual TLS" fill 0
    scenario "1 GiB random, 400 MiB/s dirty, mutual TLS" fill 400
    tls=()
fi
