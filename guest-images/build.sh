#!/usr/bin/env bash
# Builds the vmm test guest: a small Linux 6.1 kernel (bzImage and ELF vmlinux,
# from Debian's linux-source-6.1) and a busybox initramfs. Results are cached in
#   ${VMM_CACHE_DIR:-$HOME/.cache/vmm}/guest-images/<hash>/
# keyed by every input, so a second run only prints that directory, which is
# always the last line of stdout. Progress goes to stderr. See README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root="${VMM_CACHE_DIR:-$HOME/.cache/vmm}/guest-images"

log() { printf 'guest-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- 1. Packages ----------------------------------------------------------------
# Installed only when missing, so a cached run never touches apt. They must be
# present before hashing because their versions are part of the cache key.
packages=(linux-source-6.1 busybox-static build-essential patch musl-tools flex bison bc libelf-dev lz4 xz-utils)
missing=()
for p in "${packages[@]}"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=(); ((EUID == 0)) || sudo=(sudo)
    log "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- 2. Cache key ---------------------------------------------------------------
# Everything that decides the output: our checked-in inputs, this script, and the
# versions of the kernel source, busybox and compiler they are built with.
key=$(
    cd "$here"
    sha256sum build.sh kernel.config init outb.c ticks.c patches/*.patch
    dpkg-query -W -f='${Package} ${Version}\n' linux-source-6.1 busybox-static musl-tools
    gcc --version | head -n1
)
key=$(sha256sum <<<"$key" | cut -c1-16)
out="$cache_root/$key"
outputs=(bzImage vmlinux initramfs.cpio kernel.config)

is_complete() { local f; for f in "${outputs[@]}"; do [[ -s $out/$f ]] || return 1; done; }

finish() {
    # guest-images/out -> the cache directory, for people and scripts in the repo.
    [[ -L $here/out || ! -e $here/out ]] || die "$here/out exists and is not a symlink"
    ln -sfn "$out" "$here/out"
    log "kernel $(cat "$out/kernel.release" 2>/dev/null || echo '?'): $out"
    printf '%s\n' "$out"
    exit 0
}

is_complete && finish

# --- 3. Build (serialized: a concurrent run waits, then finds the cache) ---------
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock -n 9 || { log "another build is running; waiting for it"; flock 9; }
is_complete && finish
# A directory under the final name is only ever created by an atomic rename, so
# an incomplete one was damaged by hand; build it again.
rm -rf "$out"
# Leftovers of builds that were killed (under the lock, none is running).
rm -rf "$cache_root"/.build-*

work=$(mktemp -d "$cache_root/.build-$key.XXXXXX")
[[ $work != *[[:space:]]* ]] || die "cache path must not contain white space: $work"
stage="$work/out"          # becomes $out by one rename once everything succeeded
src="$work/linux"
build_log="$stage/build.log"
mkdir -p "$stage" "$src"
: >"$build_log"

on_exit() {
    local rc=$?
    if ((rc != 0)) && [[ -s $build_log ]]; then
        cp "$build_log" "$cache_root/$key.failed.log" 2>/dev/null || true
        log "build failed (exit $rc); last lines of the log:"
        tail -n 40 "$build_log" >&2 || true
        log "full log: $cache_root/$key.failed.log"
    fi
    rm -rf "$work"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Runs the kernel's make with its output in the log. ARCH=x86_64 matters: with
# the default ARCH=x86, `make tinyconfig` answers "no" to "64-bit kernel?".
kmake() {
    make -C "$src" ARCH=x86_64 KBUILD_BUILD_USER=vmm KBUILD_BUILD_HOST=guest-images "$@" >>"$build_log" 2>&1
}

log "building in $work (log: $build_log)"
start=$SECONDS

log "unpacking /usr/src/linux-source-6.1.tar.xz"
tar -xf /usr/src/linux-source-6.1.tar.xz -C "$src" --strip-components=1

# The test guest's own kernel patches (each one's header says what it is for). Each must apply
# cleanly: a patch that no longer fits Debian's source fails the build instead of being skipped.
for patch in "$here"/patches/*.patch; do
    patch -d "$src" -p1 --forward --no-backup-if-mismatch <"$patch" >>"$build_log" 2>&1 ||
        die "patch $(basename "$patch") does not apply to linux-source-6.1"
    log "applied patch $(basename "$patch")"
    printf 'guest-images: applied patch %s\n' "$(basename "$patch")" >>"$build_log"
done

log "configuring: tinyconfig + kernel.config"
kmake tinyconfig
(cd "$src" && ./scripts/kconfig/merge_config.sh -m .config "$here/kernel.config") >>"$build_log" 2>&1
kmake olddefconfig

# Kconfig drops an option whose dependencies are not met without an error, so
# check that every line of the fragment made it into the final .config.
bad=0
while IFS= read -r line; do
    if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        grep -qxF -- "$line" "$src/.config" && continue
        got=$(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$src/.config" || echo "absent")
    elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        got=$(grep -E "^${BASH_REMATCH[1]}=" "$src/.config") || continue
    else
        continue  # comment or blank
    fi
    log "config: wanted '$line', got '$got'"
    bad=1
done <"$here/kernel.config"
((bad == 0)) || die "kernel.config options lost in the final .config (missing dependencies?)"
cp "$src/.config" "$stage/kernel.config"
release=$(make -s -C "$src" ARCH=x86_64 kernelrelease)
printf '%s\n' "$release" >"$stage/kernel.release"

log "compiling Linux $release with $(nproc) jobs (takes minutes)"
kmake -j"$(nproc)" bzImage vmlinux
cp "$src/arch/x86/boot/bzImage" "$src/vmlinux" "$stage/"

# Quick checks of what a loader relies on: a 64-bit ELF, and a bzImage setup header.
[[ $(od -An -tx1 -N5 "$stage/vmlinux" | tr -d ' ') == 7f454c4602 ]] || die "vmlinux is not a 64-bit ELF file"
[[ $(od -An -c -j $((0x202)) -N4 "$stage/bzImage" | tr -d ' ') == HdrS ]] || die "bzImage has no setup header"

log "building outb, ticks and the initramfs"
# musl, not glibc: static, they are about 20-35 KB instead of 750, and the emulated kernel unpacks and
# execs every byte of them.
for program in outb ticks; do
    musl-gcc -static -O2 -s -Wall -Wextra -Werror -o "$work/$program" "$here/$program.c"
done
cp "$here/init" "$work/init"
# Fixed times (gen_init_cpio keeps file mtimes) keep the archive reproducible.
touch -d @0 "$work/init" "$work/outb" "$work/ticks"

initramfs_applets=(sh mount umount cat ls dmesg seq sync sha256sum ip ping nc reboot sleep)
# The initramfs is described as a gen_init_cpio list (the kernel's own tool), so
# neither root nor mknod is needed and file owners and modes are exact.
{
    for d in /bin /sbin /usr /usr/bin /usr/sbin /dev /proc /sys /tmp /root /etc; do
        mode=0755
        [[ $d == /tmp ]] && mode=1777
        [[ $d == /root ]] && mode=0700
        echo "dir $d $mode 0 0"
    done
    # The kernel opens /dev/console for PID 1 before devtmpfs is mounted.
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "nod /dev/null 0666 0 0 c 1 3"
    echo "file /init $work/init 0755 0 0"
    echo "file /bin/busybox /bin/busybox 0755 0 0"
    echo "file /bin/outb $work/outb 0755 0 0"
    echo "file /bin/ticks $work/ticks 0755 0 0"
    # A symlink for each applet /init and a debugging shell use, not for all ~400: where the guest kernel is
    # emulated, unpacking the symlinks alone took about 10 s of each boot. `busybox APPLET` runs any other.
    for applet in "${initramfs_applets[@]}"; do
        echo "slink /bin/$applet /bin/busybox 0777 0 0"
    done
} >"$work/initramfs.list"
# Uncompressed: under the nested backend the kernel unpacks a gzip initramfs in emulated code, which
# took about two of the three minutes of a boot; an uncompressed cpio is just copied.
"$src/usr/gen_init_cpio" -t 0 "$work/initramfs.list" >"$stage/initramfs.cpio"

# --- 4. Publish: one atomic rename, so the cache never holds half a result ---------
mv -T "$stage" "$out"
rm -f "$cache_root/$key.failed.log"
log "built in $((SECONDS - start)) s"
finish
