#!/usr/bin/env bash
# Installs the OCF resource agent ocf:vmm:vm (ocf/vm) as provider "vmm": into
# /usr/lib/ocf/resource.d/vmm/vm, where Pacemaker looks for agents, or into DIR/vmm/vm for a
# resource.d directory given as the argument. Needs resource-agents (ocf-shellfuncs) on the node.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
resource_d=${1:-/usr/lib/ocf/resource.d}
install -D -m 0755 "$root/ocf/vm" "$resource_d/vmm/vm"
echo "installed ocf:vmm:vm as $resource_d/vmm/vm"
