#!/usr/bin/env bash
# Times the NativeAOT vmm end to end: process start to the guest ending the VM (a firmware guest that
# writes the exit port at once), and the process's peak resident memory. Also, with --linux, the wall
# time from process start to the guest-images kernel printing "Run /init as init process", to its init
# printing VMM-GUEST-INIT-OK, and to the guest ending the VM (exit code 33), LINUX_RUNS times per kernel
# (default 3; each run is a minute or more on nested KVM), median and range, the first run included.
# Usage: bench/startup.sh [--linux]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
dotnet publish src/Vmm.Cli -c Release -r linux-x64 -o "$out/bin" -v quiet -nologo >/dev/null
dotnet run -c Release --project bench/Vmm.Bench -- write-firmware "$out/fw" >/dev/null
vmm=$out/bin/vmm
[[ -x /usr/bin/time ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >&2

echo "tiny guest (exit port at once), 20 runs: wall ms and peak RSS KiB per run"
for _ in $(seq 20); do
    start=$(date +%s%N)
    /usr/bin/time -f "%M" -o "$out/t" "$vmm" run --kernel "$out/fw/exit.elf" --memory 16M >/dev/null 2>&1 || true
    end=$(date +%s%N)
    # time(1) puts "Command exited with non-zero status N" first: the guest's exit code is not 0.
    echo "$(( (end - start) / 1000 )) $(tail -n1 "$out/t")"
done | sort -n | awk '{ us[NR] = $1; rss[NR] = $2 } END { printf "wall ms (incl. fork/exec of time(1)): min %.1f median %.1f max %.1f; peak RSS median %d KiB\n", us[1] / 1000, us[int((NR + 1) / 2)] / 1000, us[NR] / 1000, rss[int((NR + 1) / 2)] }'

if [[ ${1:-} == --linux ]]; then
    images=$(guest-images/build.sh | tail -n1)
    runs=${LINUX_RUNS:-3}
    summary() { sort -n | awk '{ v[NR] = $1 } END { printf "median %.1f s (%.1f-%.1f, %d runs)", v[int((NR + 1) / 2)], v[1], v[NR], NR }'; }
    for kernel in vmlinux bzImage; do
        : >"$out/init" && : >"$out/marker" && : >"$out/exit"
        for _ in $(seq "$runs"); do
            start=$(date +%s.%N)
            set +e
            "$vmm" run --kernel "$images/$kernel" --initrd "$images/initramfs.cpio" --memory 256M 2>/dev/null |
                while IFS= read -r line; do
                    case $line in
                    *"Run /init as init process"*) awk "BEGIN { print $(date +%s.%N) - $start }" >>"$out/init" ;;
                    *VMM-GUEST-INIT-OK*) awk "BEGIN { print $(date +%s.%N) - $start }" >>"$out/marker" ;;
                    esac
                done
            rc=${PIPESTATUS[0]}
            set -e
            awk "BEGIN { print $(date +%s.%N) - $start }" >>"$out/exit"
            [[ $rc == 33 ]] || echo "$kernel: vmm exited $rc, not 33" >&2
        done
        echo "$kernel: 'Run /init as init process' $(summary <"$out/init"); VMM-GUEST-INIT-OK $(summary <"$out/marker"); exit 33 $(summary <"$out/exit") (wall, from process start)"
    done
fi
