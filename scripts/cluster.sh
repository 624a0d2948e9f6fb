#!/usr/bin/env bash
# A real two-node Pacemaker + Corosync cluster on this one machine, for trying ocf:vmm:vm (ocf/vm):
#
#   scripts/cluster.sh up                  start node1 and node2 (waits until both are online)
#   scripts/cluster.sh exec NODE CMD...    run CMD inside NODE (e.g. exec node1 crm_mon -1)
#   scripts/cluster.sh status              whether each node runs, and crm_mon -1 from a running one
#   scripts/cluster.sh down                stop both nodes and remove all that `up` made (idempotent)
#
# Each node is a network namespace (NODE_PREFIX + node1, ...) joined to the other by a veth pair
# (10.77.0.1/24 and 10.77.0.2/24), plus its own mount, UTS (hostname node1/node2), IPC and PID
# namespaces, with private /run, /dev/shm, /etc/corosync, /var/lib/corosync, /var/lib/pacemaker and
# /var/log, and a copy of /usr/lib/ocf/resource.d with the vmm provider bind-mounted over it (the
# host's /usr is untouched). Corosync runs knet with two_node; the CIB is pre-seeded with
# stonith-enabled=false, no-quorum-policy=ignore and dc-deadtime=2s, so both nodes are online in
# seconds. The rest of the file system (/tmp, /srv, the repository, /dev/kvm) is the host's, shared by
# both nodes. Needs root; installs pacemaker, corosync, crmsh and resource-agents when missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${VMM_CLUSTER_PREFIX:-vmmcl-}
state=${VMM_CLUSTER_DIR:-/var/tmp/${prefix}cluster}
nodes=(node1 node2)
declare -A address=([node1]=10.77.0.1 [node2]=10.77.0.2)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

init_pid() { # the host pid of NODE's init (PID 1 of its PID namespace), if it runs
    local pid
    pid=$(tr -d ' \n' 2>/dev/null <"$state/$1/init.pid") || return 1
    [[ -n $pid && -d /proc/$pid ]] || return 1
    echo "$pid"
}

in_node() { # NODE CMD...: run CMD in all of NODE's namespaces
    local node=$1 pid; shift
    pid=$(init_pid "$node") || die "$node does not run (scripts/cluster.sh up)"
    nsenter -t "$pid" -m -u -i -n -p --wd=/ -- "$@"
}

install_packages() {
    local packages=(pacemaker corosync crmsh resource-agents iproute2 util-linux) missing=() p
    for p in "${packages[@]}"; do
        [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
}

write_corosync_conf() {
    cat >"$state/corosync.conf" <<EOF
totem {
    version: 2
    cluster_name: vmm-test
    transport: knet
    crypto_cipher: aes256
    crypto_hash: sha256
    token: 3000
}
nodelist {
    node {
        ring0_addr: ${address[node1]}
        name: node1
        nodeid: 1
    }
    node {
        ring0_addr: ${address[node2]}
        name: node2
        nodeid: 2
    }
}
quorum {
    provider: corosync_votequorum
    two_node: 1
}
logging {
    to_logfile: yes
    logfile: /var/log/corosync/corosync.log
    to_stderr: no
    to_syslog: no
    timestamp: on
}
system {
    sched_rr: no
    move_to_root_cgroup: no
}
EOF
}

write_cib() { # FILE: the seed CIB, enough for both nodes to elect a DC at once and run resources
    cat >"$1" <<'EOF'
<cib validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>
        <nvpair id="cib-bootstrap-options-no-quorum-policy" name="no-quorum-policy" value="ignore"/>
        <nvpair id="cib-bootstrap-options-dc-deadtime" name="dc-deadtime" value="2s"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources/>
    <constraints/>
  </configuration>
  <status/>
</cib>
EOF
    chown hacluster:haclient "$1"
    chmod 0600 "$1"
}

# PID 1 of a node: makes the node's private directories, starts corosync then pacemakerd, reaps
# orphans, and on SIGTERM stops pacemakerd then corosync.
write_init() {
    cat >"$state/init.sh" <<'EOF'
#!/usr/bin/env bash
node=$1 dir=$2
hostname "$node"
umount -R -l /run/netns 2>/dev/null || true  # copies of every netns mount would keep those alive
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
for d in etc/corosync var/lib/corosync var/lib/pacemaker var/log; do
    mount --bind "$dir/${d//\//-}" "/$d"
done
mount --bind "$dir/resource.d" /usr/lib/ocf/resource.d
mkdir -p /run/lock /run/resource-agents /run/crm /run/pacemaker /run/vmm/received
chown hacluster:haclient /run/crm /run/pacemaker
stopping=
stop() {
    stopping=1
    [[ -n ${pcmk:-} ]] && kill -TERM "$pcmk" 2>/dev/null && wait "$pcmk"
    [[ -n ${coro:-} ]] && kill -TERM "$coro" 2>/dev/null && wait "$coro"
    exit 0
}
trap stop TERM INT
corosync -f >/var/log/corosync/stdout.log 2>&1 &
coro=$!
for _ in $(seq 100); do corosync-cfgtool -s >/dev/null 2>&1 && break; sleep 0.1; done
PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none pacemakerd >/var/log/pacemaker/stdout.log 2>&1 &
pcmk=$!
while :; do sleep 1 & wait $! 2>/dev/null; done  # bash reaps every child, orphans included
EOF
    chmod 755 "$state/init.sh"
}

prepare_node() { # NODE: its private directories under $state/NODE
    local dir=$state/$1
    mkdir -p "$dir"/{etc-corosync,var-lib-corosync,var-log/{corosync,pacemaker,crmsh},resource.d}
    mkdir -p "$dir"/var-lib-pacemaker/{cib,pengine,blackbox,cores}
    chown -R hacluster:haclient "$dir"/var-lib-pacemaker "$dir"/var-log/pacemaker
    chmod 750 "$dir"/var-lib-pacemaker/*
    cp "$state/corosync.conf" "$state/authkey" "$dir/etc-corosync/"
    write_cib "$dir/var-lib-pacemaker/cib/cib.xml"
    cp -a /usr/lib/ocf/resource.d/. "$dir/resource.d/"
    "$root/scripts/install-ocf-agent.sh" "$dir/resource.d" >/dev/null
}

up() {
    ((EUID == 0)) || die "needs root"
    local node
    for node in "${nodes[@]}"; do
        init_pid "$node" >/dev/null && die "$node runs already (scripts/cluster.sh down first)"
    done
    install_packages
    local start=$EPOCHREALTIME
    down quiet
    mkdir -p "$state"
    corosync-keygen -k "$state/authkey" >/dev/null 2>&1
    write_corosync_conf
    write_init
    for node in "${nodes[@]}"; do
        ip netns add "$prefix$node"
    done
    ip link add eth0 netns "${prefix}node1" type veth peer name eth0 netns "${prefix}node2"
    for node in "${nodes[@]}"; do
        ip -n "$prefix$node" link set lo up
        ip -n "$prefix$node" addr add "${address[$node]}/24" dev eth0
        ip -n "$prefix$node" link set eth0 up
        prepare_node "$node"
        setsid nsenter --net="/run/netns/$prefix$node" unshare --mount --uts --ipc --pid --fork --mount-proc \
            --propagation slave --kill-child=TERM "$state/init.sh" "$node" "$state/$node" \
            </dev/null >"$state/$node/init.log" 2>&1 &
        local unshare=$! pid=
        for _ in $(seq 50); do
            pid=$(tr -d ' \n' 2>/dev/null <"/proc/$unshare/task/$unshare/children") && [[ -n $pid ]] && break
            sleep 0.1
        done
        [[ -n $pid ]] || die "$node's init did not start: $(cat "$state/$node/init.log")"
        echo "$pid" >"$state/$node/init.pid"
    done
    log "waiting for both nodes to be online"
    for _ in $(seq 120); do
        if in_node node1 crm_mon -1 2>/dev/null | grep -Eq 'Online: \[ node1 node2 \]'; then
            log "both nodes online after $(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $start }") s"
            return 0
        fi
        sleep 0.5
    done
    in_node node1 crm_mon -1 >&2 || true
    die "the nodes did not both come online in 60 s (logs under $state/NODE/var-log)"
}

down() {
    local node pid
    for node in "${nodes[@]}"; do
        if pid=$(init_pid "$node"); then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 150); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
            [[ -d /proc/$pid ]] && { log "$node did not stop in 15 s: killing it"; kill -KILL "$pid" 2>/dev/null || true; }
            for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
        fi
        ip netns del "$prefix$node" 2>/dev/null || true
    done
    rm -rf "$state"
    [[ ${1:-} == quiet ]] || log "down"
}

status() {
    local node any=
    for node in "${nodes[@]}"; do
        if pid=$(init_pid "$node"); then echo "$node: running (init pid $pid)"; any=$node
        else echo "$node: not running"; fi
    done
    [[ -n $any ]] && in_node "$any" crm_mon -1
    return 0
}

case ${1:-} in
    up) up ;;
    down) ((EUID == 0)) || die "needs root"; down ;;
    status) status ;;
    exec) (($# >= 3)) || die "usage: scripts/cluster.sh exec NODE CMD..."
          [[ " ${nodes[*]} " == *" $2 "* ]] || die "no node $2 (${nodes[*]})"
          node=$2; shift 2; in_node "$node" "$@" ;;
    *) sed -n '2,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
