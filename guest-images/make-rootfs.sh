#!/usr/bin/env bash
# Makes a small ext4 root disk image for the vmm test guest: static busybox (every applet), /bin/outb,
# /bin/ticks, the guest's /init (the same as the initramfs's: it runs the test vmmtest= names),
# /bin/spin (an init that makes no system call) and a known file, so a guest can mount it as
# root=/dev/vda and prove reads, writes, networking and its progress across a move.
# Usage: make-rootfs.sh IMAGE [SIZE]   (SIZE for mkfs.ext4, default 64M). Fast: no kernel involved.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
image=${1:?usage: make-rootfs.sh IMAGE [SIZE]}
size=${2:-64M}

for tool in mkfs.ext4:e2fsprogs gcc:gcc musl-gcc:musl-tools; do
    command -v "${tool%%:*}" >/dev/null && continue
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tool##*:}" >&2
done
[[ -x /bin/busybox ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,etc,tmp}
cp /bin/busybox "$root/bin/busybox"
mkdir -p "$root"/usr/{bin,sbin}
# One symlink per applet, where busybox itself puts it.
/bin/busybox --list-full | while read -r applet; do
    case "$applet" in
    bin/busybox) ;;
    bin/* | sbin/* | usr/bin/* | usr/sbin/*) ln -s /bin/busybox "$root/$applet" ;;
    esac
done
# musl keeps them small: every page of a program is paged in by the guest's (where it is emulated, slow) kernel.
musl-gcc -static -O2 -s -o "$root/bin/outb" "$here/outb.c"
musl-gcc -static -O2 -s -o "$root/bin/ticks" "$here/ticks.c"
gcc -static -nostdlib -s -o "$root/bin/spin" "$here/spin.S"
install -m 0755 "$here/init" "$root/init"
echo "known contents 6b1f" > "$root/etc/vmm-known-file"
rm -f "$image"
mkfs.ext4 -q -F -L vmmroot -d "$root" "$image" "$size" >/dev/null
