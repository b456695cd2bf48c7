#!/usr/bin/env bash
# hostgate against HAProxy, nginx and sniproxy: the same rules, the same upstream, the same load
# generator, one run, one table (benches/compare/README.md).
#
#   sudo benches/compare/run.sh                      # the full run: shipped rules and 100k synthetic
#   sudo benches/compare/run.sh --duration 3 --idle 1000 --synthetic 10000   # a quick one
#
# Options after the script name go to the harness (`compare --help` lists them). The table is
# printed and written to target/compare/results.md. Needs root: it installs the peers from the
# distribution, makes a network namespace and adds iptables REDIRECT rules inside it.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
    echo "run.sh: needs root (apt-get, ip netns, iptables)" >&2
    exit 1
fi

if [ -z "${HOSTGATE_COMPARE_NO_INSTALL:-}" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends \
        haproxy nginx libnginx-mod-stream sniproxy iptables iproute2 util-linux procps
    # The packages may start their default services; the harness starts its own instances.
    for s in nginx haproxy sniproxy; do
        (systemctl stop "$s" || service "$s" stop) >/dev/null 2>&1 || true
    done
fi

cargo build --release --bin hostgate --example compare

# A namespace of our own: a fresh loopback, our own NAT rules, our own port range.
ns="hostgate-compare-$$"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" sysctl -q -w net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1

# Enough descriptors for the idle-tunnel count (two per tunnel on each side).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The proxy under test gets the last CPU; the load generator and the upstream the others.
cpus=$(nproc)
if [ "$cpus" -ge 2 ]; then
    proxy_cpu=$((cpus - 1))
    client_cpus="0-$((cpus - 2))"
else
    proxy_cpu=0
    client_cpus=0
fi
mkdir -p target/compare
# Not `exec`: the trap removes the namespace when the harness ends.
ip netns exec "$ns" taskset -c "$client_cpus" target/release/examples/compare \
    --proxy-cpu "$proxy_cpu" --out target/compare/results.md "$@"
