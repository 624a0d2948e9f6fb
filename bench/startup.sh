#!/usr/bin/env bash
# Times the NativeAOT vmm end to end: process start to the guest ending the VM (a firmware guest that
# writes the exit port at once), and the process's peak resident memory. Also, with --linux, the wall
# time from process start to the guest-images kernel printing "Run /init as init process".
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
    /usr/bin/time -f "%e %M" -o "$out/t" "$vmm" run --kernel "$out/fw/exit.elf" --memory 16M 2>/dev/null >/dev/null || true
    read -r seconds rss <"$out/t"
    echo "$(awk "BEGIN { print $seconds * 1000 }") $rss"
done | sort -n | awk '{ ms[NR] = $1; rss[NR] = $2 } END { printf "wall ms: min %s median %s max %s; peak RSS: median %s KiB\n", ms[1], ms[int((NR + 1) / 2)], ms[NR], rss[int((NR + 1) / 2)] }'

if [[ ${1:-} == --linux ]]; then
    images=$(guest-images/build.sh | tail -n1)
    for kernel in vmlinux bzImage; do
        start=$(date +%s.%N)
        "$vmm" run --kernel "$images/$kernel" --initrd "$images/initramfs.cpio" --memory 256M 2>/dev/null |
            while IFS= read -r line; do
                if [[ $line == *"Run /init as init process"* ]]; then
                    echo "$kernel: 'Run /init as init process' after $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }") s (wall)"
                fi
            done
    done
fi
