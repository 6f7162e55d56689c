#!/usr/bin/env bash
# Benchmark a local 3-node mokv cluster: RELEASE binaries, mutual TLS with certificates made by
# `mokvd certs`, data on the local disk (RocksDB, fsync on), the load generator `mokv bench` on
# the same machine. Prints ONE table: ops/s, p50/p99/p99.9 latency, CPU µs per operation of
# every process (each node and the generator, from /proc/<pid>/stat over the measured window)
# and each node's RSS. Cleans up its processes and files on exit.
#
# Usage: scripts/bench.sh [extra `mokv bench` flags]
# Environment (defaults in brackets):
#   CLIENTS [256]  SECONDS_MEASURED [10]  WARMUP [2]  KEYS [100000]  WORKLOADS [put,get,sget,mix]
#   CONNECTIONS [2] (HTTP/2 connections per node)
#   MOKVD_ARGS [""] (extra flags for every node, e.g. "--snapshot-threshold 100000000")
#   NO_BUILD=1 (use the release binaries already in the target dir)
#   BIN_DIR (take mokvd and mokv from here instead; implies NO_BUILD=1)
#   PERF_OUT (record `perf record -g` (PERF_CALLGRAPH, PERF_FREQ) of n1, the bootstrap node and normally the leader, for
#             the whole run into this file)
#   BENCH_DIR (where data and certificates go; default: a fresh directory under the target dir,
#              on the disk the build uses, not a tmpfs)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
cd "$root"
if [ "${NO_BUILD:-0}" != 1 ] && [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -q -p mokv-shell -p mokv-client --bins
fi
bin="${BIN_DIR:-$CARGO_TARGET_DIR/release}"
mokvd="$bin/mokvd"
mokv="$bin/mokv"

dir="${BENCH_DIR:-$(mktemp -d "$CARGO_TARGET_DIR/bench.XXXXXX")}"
mkdir -p "$dir"
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ -z "${BENCH_DIR:-}" ]; then
        rm -rf "$dir"
    fi
}
trap cleanup EXIT

"$mokvd" certs --out "$dir/certs" --node n1 --node n2 --node n3 --client root >/dev/null

# Starts node $1 (extra flags after it) on ephemeral ports; its log goes to $dir/$1.log.
start() {
    local name="$1"
    shift
    # shellcheck disable=SC2086
    "$mokvd" --data-dir "$dir/data/$name" --node-name "$name" \
        --cluster-key-file "$dir/certs/cluster.key" \
        --server-tls-cert-file "$dir/certs/$name.pem" \
        --server-tls-key-file "$dir/certs/$name-key.pem" \
        --server-tls-ca-file "$dir/certs/ca.pem" \
        --rpc-port 0 --bind-addr 127.0.0.1:0 --log-level warn \
        ${MOKVD_ARGS:-} "$@" >"$dir/$name.log" 2>&1 &
    pids+=("$!")
}

# The "mokvd listening on ... (advertised HOST:PORT, gossip HOST:PORT, raft id N)" line.
listening() {
    local log="$dir/$1.log"
    for _ in $(seq 1 300); do
        if grep -q "^mokvd listening on" "$log" 2>/dev/null; then
            grep "^mokvd listening on" "$log"
            return 0
        fi
        sleep 0.1
    done
    echo "bench.sh: $1 did not start:" >&2
    cat "$log" >&2
    return 1
}
field() { # $1 = line, $2 = "advertised" | "gossip"
    sed -E "s/.*$2 ([^,)]+).*/\1/" <<<"$1"
}

start n1 --bootstrap
l1="$(listening n1)"
join="$(field "$l1" gossip)"
start n2 --start-join-addrs "$join"
start n3 --start-join-addrs "$join"
l2="$(listening n2)"
l3="$(listening n3)"
endpoints="$(field "$l1" advertised),$(field "$l2" advertised),$(field "$l3" advertised)"

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "command: scripts/bench.sh $* (CLIENTS=${CLIENTS:-256} SECONDS_MEASURED=${SECONDS_MEASURED:-10} KEYS=${KEYS:-100000} MOKVD_ARGS='${MOKVD_ARGS:-}')"

if [ -n "${PERF_OUT:-}" ]; then
    # shellcheck disable=SC2086
    perf record -F "${PERF_FREQ:-499}" ${PERF_CALLGRAPH:--g} -p "${pids[0]}" -o "$PERF_OUT" >/dev/null 2>&1 &
    perf_pid=$!
fi

"$mokv" --endpoints "$endpoints" --ca "$dir/certs/ca.pem" \
    --cert "$dir/certs/root.pem" --key "$dir/certs/root-key.pem" \
    bench --wait-voters 3 \
    --clients "${CLIENTS:-256}" --seconds "${SECONDS_MEASURED:-10}" \
    --warmup-seconds "${WARMUP:-2}" --keys "${KEYS:-100000}" \
    --workloads "${WORKLOADS:-put,get,sget,mix}" --connections "${CONNECTIONS:-2}" \
    --pid "n1=${pids[0]}" --pid "n2=${pids[1]}" --pid "n3=${pids[2]}" "$@"

if [ -n "${PERF_OUT:-}" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
fi
