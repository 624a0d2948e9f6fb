#!/usr/bin/env bash
# Installs what vmm's build and tests need on a fresh Debian 12 machine (idempotent, quiet when
# everything is there). The .NET 10 SDK must already be installed: Debian does not package it.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

command -v dotnet >/dev/null || { log "error: the .NET 10 SDK (dotnet) is not installed"; exit 1; }
[[ $(dotnet --version) == 10.* ]] || log "warning: dotnet $(dotnet --version) found; vmm targets .NET 10"

# gcc + kernel headers: the ABI test compiles a probe against <linux/kvm.h>; clang/lld are not needed
# (NativeAOT links with gcc here); zlib1g-dev is what NativeAOT's linker asks for. e2fsprogs and
# busybox-static (with musl-tools for its small static programs) make the guest's ext4 root disk; iproute2, iputils-ping and socat run the network
# tests (a TAP in a network namespace, ping, the netconsole listener). resource-agents (ocf-shellfuncs,
# ocf-tester) and libxml2-utils (xmllint, which ocf-tester validates the meta-data with) test the OCF agent;
# pacemaker, corosync and crmsh run it in the test cluster (scripts/cluster.sh; installing them starts no daemon).
packages=(gcc libc6-dev linux-libc-dev zlib1g-dev e2fsprogs busybox-static musl-tools iproute2 iputils-ping socat resource-agents libxml2-utils
          pacemaker corosync crmsh)
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

if [[ ! -e /dev/kvm ]]; then
    log "error: /dev/kvm does not exist: load kvm_intel or kvm_amd (and enable virtualization in the firmware)"
    exit 1
fi
if [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
    log "error: no read/write access to /dev/kvm: run as root or join the 'kvm' group"
    exit 1
fi
