#!/usr/bin/env bash
# Makes a small ext4 root disk image for the vmm test guest: static busybox, /bin/outb, an /init
# (disk-init), /net-init (a TCP round trip), /bin/spin (an init that makes no system call) and a
# known file, so a guest can mount it as root=/dev/vda and prove reads, writes and networking.
# Usage: make-rootfs.sh IMAGE [SIZE]   (SIZE for mkfs.ext4, default 64M). Fast: no kernel involved.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
image=${1:?usage: make-rootfs.sh IMAGE [SIZE]}
size=${2:-64M}

for tool in mkfs.ext4:e2fsprogs gcc:gcc; do
    command -v "${tool%%:*}" >/dev/null && continue
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tool##*:}" >&2
done
[[ -x /bin/busybox ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,etc,tmp}
cp /bin/busybox "$root/bin/busybox"
for applet in sh mount cat echo sync reboot sleep ls nc sha256sum; do ln -s busybox "$root/bin/$applet"; done
gcc -static -O2 -s -o "$root/bin/outb" "$here/outb.c"
gcc -static -nostdlib -s -o "$root/bin/spin" "$here/spin.S"
install -m 0755 "$here/disk-init" "$root/init"
install -m 0755 "$here/net-init" "$root/net-init"
echo "known contents 6b1f" > "$root/etc/vmm-known-file"
rm -f "$image"
mkfs.ext4 -q -F -L vmmroot -d "$root" "$image" "$size" >/dev/null
