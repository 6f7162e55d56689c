#!/usr/bin/env bash
# Restart benchmark on one node's data, without a cluster: starts `mokvd` alone on a fresh copy
# of a stopped node's data directory, waits for its "listening" line, stops it, and repeats;
# with several binary directories the runs alternate between them (before/after pairs on the
# same data, in one run of the script). Per binary directory it prints min/median/max of the
# node's own account of loading (snapshot + log, `loaded raft store ms=`), of replaying the log
# on the snapshot (`replayed the raft log ms=`), of exec-to-listening, and of the time from a
# SIGTERM sent once it listens to its exit, and its resident and peak memory when it listens
# (VmRSS, VmHWM). The node cannot reach
# its peers, so this is its start alone; scripts/bench-scale.sh measures the restart to a
# first linearizable read in a running cluster.
# Usage: BENCH_DIR=<dir scripts/bench-scale.sh kept> scripts/bench-restart.sh BIN_DIR [BIN_DIR ...]
# Environment: BENCH_DIR (required: its certs/ and data/NODE), NODE [n3], RUNS [5 per binary
#   directory], COPY_DIR (where the copies go; default: beside BENCH_DIR's data, same disk).
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
dir="${BENCH_DIR:?BENCH_DIR: a directory scripts/bench-scale.sh kept}"
node="${NODE:-n3}"
runs="${RUNS:-5}"
copy="${COPY_DIR:-$dir/restart-copy}"
[ -d "$dir/data/$node" ] || { echo "no $dir/data/$node" >&2; exit 2; }
results="$(mktemp)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$copy" "$results"
}
trap cleanup EXIT

echo "machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "data: $dir/data/$node ($(du -sm "$dir/data/$node" | cut -f1) MiB), $runs runs per binary directory, alternated"
for run in $(seq "$runs"); do
    for bin in "$@"; do
        rm -rf "$copy"
        cp -a "$dir/data/$node" "$copy"
        log="$copy.log"
        t0=$(date +%s%N)
        "$bin/mokvd" --data-dir "$copy" --node-name "$node" \
            --cluster-key-file "$dir/certs/cluster.key" \
            --server-tls-cert-file "$dir/certs/$node.pem" \
            --server-tls-key-file "$dir/certs/$node-key.pem" \
            --server-tls-ca-file "$dir/certs/ca.pem" \
            --rpc-port 0 --bind-addr 127.0.0.1:0 --log-level info >"$log" 2>&1 &
        pid=$!
        for _ in $(seq 1 12000); do
            grep -q "^mokvd listening on" "$log" && break
            kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
            sleep 0.005
        done
        t_listen=$(date +%s%N)
        # Memory once it serves: resident and peak, MiB.
        rss=$(awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$pid/status")
        hwm=$(awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$pid/status")
        # Stopped as an operator stops it; the time to its exit is the stop half of a restart.
        kill -TERM "$pid"
        for _ in $(seq 1 6000); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.005
        done
        t_exit=$(date +%s%N)
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
        load="$(sed -n -E 's/.*loaded raft store.* ms=([0-9]+).*/\1/p' "$log" | head -1)"
        replay="$(sed -n -E 's/.*replayed the raft log on the snapshot.* ms=([0-9]+).*/\1/p' "$log" | head -1)"
        echo "$bin ${load:-?} ${replay:-?} $(( (t_listen - t0) / 1000000 )) $(( (t_exit - t_listen) / 1000000 )) $rss $hwm" >>"$results"
        rm -f "$log"
    done
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    b, *v = line.split()
    rows.setdefault(b, []).append(v)
def mmm(xs):
    xs = sorted(int(x) for x in xs if x != "?")
    return f"{xs[0]}/{statistics.median(xs):g}/{xs[-1]}" if xs else "?"
print(f"{'binaries':32} {'load ms':>14} {'replay ms':>14} {'to listening ms':>16} {'SIGTERM to exit ms':>19} {'RSS MiB':>12} {'peak MiB':>12}   (min/median/max)")
for b, vs in rows.items():
    cols = list(zip(*vs))
    print(f"{b:32} {mmm(cols[0]):>14} {mmm(cols[1]):>14} {mmm(cols[2]):>16} {mmm(cols[3]):>19} {mmm(cols[4]):>12} {mmm(cols[5]):>12}")
EOF
