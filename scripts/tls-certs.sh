#!/usr/bin/env bash
# Makes a CA and, for each HOST, a --tls-dir directory DIR/HOST (ca.pem, cert.pem, key.pem) with a
# certificate the CA signed that names HOST (as IP address or DNS name), valid for a year, EC P-256.
# For trying out mutual TLS and for the smoke test and bench; hosts in production get theirs from
# whatever issues certificates there. The CA's key stays in DIR/ca.key: keep it off the hosts.
# Usage: scripts/tls-certs.sh DIR HOST...
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 DIR HOST..." >&2; exit 2; }
dir=$1; shift
mkdir -p "$dir"
if [[ ! -f $dir/ca.key ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" \
        -subj "/CN=vmm migration CA" -days 3650 2>/dev/null
fi
for host in "$@"; do
    mkdir -p "$dir/$host"
    if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san="IP:$host"; else san="DNS:$host"; fi
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/$host/key.pem" -out "$dir/$host/req.pem" \
        -subj "/CN=$host" 2>/dev/null
    openssl x509 -req -in "$dir/$host/req.pem" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 365 \
        -out "$dir/$host/cert.pem" -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n' "$san") 2>/dev/null
    rm "$dir/$host/req.pem"
    cp "$dir/ca.pem" "$dir/$host/ca.pem"
done
