#!/usr/bin/env bash
# Restart time of one node on a saved data dir, for before/after comparisons on the SAME state:
# starts `mokvd` alone (its peers need not run: loading the snapshot and replaying the committed
# log do not wait for them) on a fresh copy of the data dir, RUNS times per binary directory
# (interleaved), and prints the time from exec to its "listening" line with the node's own
# account of loading (snapshot + log) and replaying, in ms.
#
# Make a data dir with the scale benchmark, which keeps BENCH_DIR when it is given:
#   BENCH_DIR=/tmp/b KEYS=1000000 SECONDS_MEASURED=3 WORKLOADS=put RESTARTS=0 scripts/bench-scale.sh
# then: BENCH_DIR=/tmp/b BIN_DIRS="/path/old /path/new" scripts/bench-restart.sh
# Environment: BENCH_DIR (required: data/<NODE> and certs/ under it), BIN_DIRS (default: the
# release target dir), NODE [n3], RUNS [3].
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
bench="${BENCH_DIR:?BENCH_DIR: a directory scripts/bench-scale.sh kept}"
node="${NODE:-n3}"
bins="${BIN_DIRS:-$CARGO_TARGET_DIR/release}"
work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
echo "state: $bench/data/$node ($(du -sh "$bench/data/$node" | cut -f1)), $(nproc) CPUs"
for run in $(seq 1 "${RUNS:-3}"); do
    for bin in $bins; do
        rm -rf "$work/data"
        cp -a "$bench/data/$node" "$work/data"
        sync
        start_ns=$(date +%s%N)
        "$bin/mokvd" --data-dir "$work/data" --node-name "$node" \
            --cluster-key-file "$bench/certs/cluster.key" \
            --server-tls-cert-file "$bench/certs/$node.pem" \
            --server-tls-key-file "$bench/certs/$node-key.pem" \
            --server-tls-ca-file "$bench/certs/ca.pem" \
            --rpc-port 0 --bind-addr 127.0.0.1:0 --log-level info >"$work/log" 2>&1 &
        pid=$!
        listening=""
        for _ in $(seq 1 6000); do
            if grep -q "^mokvd listening" "$work/log"; then
                listening=$(( ($(date +%s%N) - start_ns) / 1000000 ))
                break
            fi
            if ! kill -0 "$pid" 2>/dev/null; then break; fi
            sleep 0.005
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
        if [ -z "$listening" ]; then
            echo "$bin: the node did not start:" >&2
            cat "$work/log" >&2
            exit 1
        fi
        load=$(sed -n 's/.*loaded raft store.* log_entries=\([0-9]*\).* ms=\([0-9]*\).*/entries=\1 loading_ms=\2/p' "$work/log")
        replay=$(sed -n 's/.*replayed the raft log on the snapshot.* ms=\([0-9]*\).*/replay_ms=\1/p' "$work/log")
        echo "run $run $bin: listening after $listening ms; $load $replay"
    done
done
