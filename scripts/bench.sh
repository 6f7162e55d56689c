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
# shellcheck source=bench-cluster.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-cluster.sh"
start_cluster

machine_line
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
