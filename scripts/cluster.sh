#!/usr/bin/env bash
# A real two-node Pacemaker + Corosync cluster on this one machine, for trying ocf:vmm:vm (ocf/vm):
#
#   scripts/cluster.sh up                  start node1 and node2 (waits until both are online)
#   scripts/cluster.sh exec NODE CMD...    run CMD inside NODE (e.g. exec node1 crm_mon -1)
#   scripts/cluster.sh status              whether each node runs, and crm_mon -1 from a running one
#   scripts/cluster.sh kill NODE           the node dies: SIGKILL to its init, everything in it goes
#   scripts/cluster.sh start NODE          start a node again (after kill, or after it was fenced)
#   scripts/cluster.sh down                stop both nodes and remove all that `up` made (idempotent)
#
# Each node is a network namespace (NODE_PREFIX + node1, ...) joined to the other by a veth pair
# (10.77.0.1/24 and 10.77.0.2/24), plus its own mount, UTS (hostname node1/node2), IPC and PID
# namespaces, with private /run, /dev/shm, /etc/corosync, /var/lib/corosync, /var/lib/pacemaker and
# /var/log, and a copy of /usr/lib/ocf/resource.d with the vmm provider bind-mounted over it (the
# host's /usr is untouched). Corosync runs knet with two_node; the CIB is pre-seeded with
# stonith-enabled=false, no-quorum-policy=ignore and dc-deadtime=2s, so both nodes are online in
# seconds. The rest of the file system (/tmp, /srv, the repository, /dev/kvm) is the host's, shared by
# both nodes.
#
# Fencing: a "power switch" runs on the host beside the nodes, and each node has the fence agent
# fence_vmm_node (in an overlay on its /usr/sbin) that asks it to power a node off (SIGKILL to that
# node's init) and reads whether a node is on. Configure it with
#   crm configure primitive fence-nodes stonith:fence_vmm_node params pcmk_host_list="node1 node2"
#   crm configure property stonith-enabled=true
# A fenced node stays off until `scripts/cluster.sh start NODE`.
# Needs root; installs pacemaker, corosync, crmsh and resource-agents when missing.
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
mount -t overlay overlay -o "lowerdir=$dir/../fence-bin:/usr/sbin" /usr/sbin  # fence_vmm_node beside the host's agents
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

start_node() { # NODE: its init in its namespaces (the network namespace exists already)
    local node=$1
    setsid nsenter --net="/run/netns/$prefix$node" unshare --mount --uts --ipc --pid --fork --mount-proc \
        --propagation slave --kill-child=TERM "$state/init.sh" "$node" "$state/$node" \
        </dev/null >>"$state/$node/init.log" 2>&1 &
    local unshare=$! pid=
    for _ in $(seq 50); do
        pid=$(tr -d ' \n' 2>/dev/null <"/proc/$unshare/task/$unshare/children") && [[ -n $pid ]] && break
        sleep 0.1
    done
    [[ -n $pid ]] || die "$node's init did not start: $(cat "$state/$node/init.log")"
    echo "$pid" >"$state/$node/init.pid"
}

kill_node() { # NODE: SIGKILL to its init, which takes every process of the node with it; waits until gone
    local pid
    pid=$(init_pid "$1") || return 0
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 100); do [[ -d /proc/$pid ]] || return 0; sleep 0.1; done
    log "$1's init (pid $pid) did not go within 10 s of SIGKILL"
    return 1
}

# The fence agent each node runs (RHCS style: options on stdin). It cannot reach another node's
# processes from its own PID namespace, so it asks the host's power switch through files under
# $state/power: NODE.*.request files it writes, .result files the switch answers, NODE.state files
# the switch keeps current.
write_fence_agent() {
    mkdir -p "$state/fence-bin" "$state/power"
    printf '#!/usr/bin/env bash\npower=%q\n' "$state/power" >"$state/fence-bin/fence_vmm_node"
    cat >>"$state/fence-bin/fence_vmm_node" <<'EOF'
action=reboot node=
while getopts "o:n:" opt 2>/dev/null; do
    case $opt in o) action=$OPTARG ;; n) node=$OPTARG ;; esac
done
if ((OPTIND == 1)) && [[ ! -t 0 ]]; then
    while IFS='=' read -r key value; do
        case $key in
            action|option) action=$value ;;
            port|plug) node=$value ;;
            nodename) [[ -n $node ]] || node=$value ;;
        esac
    done
fi
case $action in
    metadata)
        cat <<'XML'
<?xml version="1.0" ?>
<resource-agent name="fence_vmm_node" shortdesc="Powers off a node of scripts/cluster.sh (SIGKILL to its init)">
<longdesc>The test cluster's power switch: off kills every process of the node; a node stays off until scripts/cluster.sh start NODE.</longdesc>
<parameters>
<parameter name="action" unique="0" required="1"><getopt mixed="-o, --action=[action]"/><content type="string" default="reboot"/><shortdesc lang="en">Fencing action</shortdesc></parameter>
<parameter name="port" unique="0" required="0"><getopt mixed="-n, --plug=[node]"/><content type="string"/><shortdesc lang="en">The node to act on</shortdesc></parameter>
</parameters>
<actions>
<action name="off"/><action name="reboot"/><action name="status"/><action name="list"/><action name="monitor"/><action name="metadata"/>
</actions>
</resource-agent>
XML
        exit 0 ;;
    monitor) [[ -e $power/switch.pid ]] && exit 0; echo "the power switch does not run" >&2; exit 1 ;;
    list) cat "$power"/*.state 2>/dev/null | cut -d' ' -f1; exit 0 ;;
    status)
        read -r _ state 2>/dev/null <"$power/$node.state" || { echo "no node $node" >&2; exit 1; }
        [[ $state == on ]] && exit 0 || exit 2 ;;
    off|reboot)
        [[ -e $power/$node.state ]] || { echo "no node $node" >&2; exit 1; }
        request=$power/$node.$(hostname).$$
        echo off >"$request.request"
        for _ in $(seq 200); do
            if [[ -e $request.result ]]; then
                result=$(cat "$request.result"); rm -f "$request.result"
                [[ $result == off ]] && { echo "$node is off"; exit 0; }
                echo "the power switch said: $result" >&2; exit 1
            fi
            sleep 0.1
        done
        rm -f "$request.request"; echo "the power switch did not answer in 20 s" >&2; exit 1 ;;
    *) echo "unsupported action $action" >&2; exit 1 ;;
esac
EOF
    chmod 755 "$state/fence-bin/fence_vmm_node"
}

# The host side of fencing: answers the nodes' requests and keeps NODE.state current.
power_switch() {
    local request node result
    while [[ -d $state/power ]]; do
        for node in "${nodes[@]}"; do
            if init_pid "$node" >/dev/null; then echo "$node on"; else echo "$node off"; fi >"$state/power/$node.state.new"
            mv -f "$state/power/$node.state.new" "$state/power/$node.state"
        done
        for request in "$state"/power/*.request; do
            [[ -e $request ]] || continue
            node=${request##*/}; node=${node%%.*}
            log "power switch: $node off (asked by ${request#*/power/$node.})"
            if kill_node "$node"; then result=off; else result="$node did not die"; fi
            echo "$result" >"${request%.request}.result.new"
            mv -f "${request%.request}.result.new" "${request%.request}.result"
            rm -f "$request"
        done
        sleep 0.1
    done
}

start_power_switch() {
    setsid "${BASH_SOURCE[0]}" power-switch </dev/null >>"$state/power/switch.log" 2>&1 &
    echo $! >"$state/power/switch.pid"
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
    write_fence_agent
    for node in "${nodes[@]}"; do
        ip netns add "$prefix$node"
    done
    ip link add eth0 netns "${prefix}node1" type veth peer name eth0 netns "${prefix}node2"
    for node in "${nodes[@]}"; do
        ip -n "$prefix$node" link set lo up
        ip -n "$prefix$node" addr add "${address[$node]}/24" dev eth0
        ip -n "$prefix$node" link set eth0 up
        prepare_node "$node"
        start_node "$node"
    done
    start_power_switch
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
    if pid=$(cat "$state/power/switch.pid" 2>/dev/null); then kill "$pid" 2>/dev/null || true; fi
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
    kill|start) (($# == 2)) && [[ " ${nodes[*]} " == *" $2 "* ]] || die "usage: scripts/cluster.sh $1 node1|node2"
          ((EUID == 0)) || die "needs root"
          if [[ $1 == kill ]]; then kill_node "$2"
          else init_pid "$2" >/dev/null && die "$2 runs already"; start_node "$2"; fi ;;
    power-switch) power_switch ;;
    exec) (($# >= 3)) || die "usage: scripts/cluster.sh exec NODE CMD..."
          [[ " ${nodes[*]} " == *" $2 "* ]] || die "no node $2 (${nodes[*]})"
          node=$2; shift 2; in_node "$node" "$@" ;;
    *) sed -n '2,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
