#!/usr/bin/env bash
# Scale benchmark of a local 3-node mokv cluster (release binaries, mutual TLS, RocksDB with
# fsync; see bench-cluster.sh): loads KEYS keys (16-byte keys, 256-byte values) from empty and
# prints
#   1. the load: keys/s and write latency while the state grows (p50/p99/p99.9/max, writes over
#      100 ms, and those grouped into stall episodes: ms since a unix time, so they line up
#      with the nodes' logs — `snapshot file written`, `slow raft store write` — kept in
#      BENCH_DIR with LOG_LEVEL=info), whether the leader changed while loading;
#   2. each node's RSS and peak RSS (VmHWM) once loaded, and again after a put/get window at
#      that size (`mokv bench` table: throughput at KEYS keys);
#   3. restart: n3 is stopped (SIGTERM: the time to its exit) and started again; the time from its start to its first
#      answered linearizable read (a `mokv get` sent to n3 only, retried every 10 ms), and the
#      time the same read takes against a running node (what one attempt costs the CLI), and
#      the restarted node's own account: loading (snapshot + log) and replaying, in ms, and the
#      CPU the other two nodes used meanwhile (they share the machine's cores with n3);
#   4. with LEARNER=1: a fourth node with an empty data dir joins by gossip and catches up (by a
#      streamed snapshot): the time from its start to its first linearizable read, its peak RSS
#      (VmHWM) and disk use, beside the data set's size;
#   5. with REWRITE=1: every key written once more, then each node's RSS. A node that loaded its
#      state at a restart (n3) or from a streamed snapshot (n4) holds keys its driver did not
#      allocate; this shows whether replacing them all leaves their old memory behind.
# Usage: scripts/bench-scale.sh
# Environment (defaults in brackets): KEYS [1000000]  CLIENTS [256]  SECONDS_MEASURED [10]
#   WORKLOADS [put,get]  RESTARTS [3]  LEARNER [0]  REWRITE [0]  and those of bench-cluster.sh (NO_BUILD, BIN_DIR,
#   BENCH_DIR, MOKVD_ARGS, LOG_LEVEL, METRICS: 1 also prints each node's memory gauges after
#   the load — process RSS, jemalloc's allocated and resident bytes, state bytes, Raft log
#   bytes in memory — and how many of its synced raft store writes took over 20, 50 and 100 ms;
#   TMPFS_NODES="n2 n3" leaves n1, the leader, alone on the disk).
set -euo pipefail
# shellcheck source=bench-cluster.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-cluster.sh"
keys="${KEYS:-1000000}"
start_cluster

machine_line
echo "command: scripts/bench-scale.sh (KEYS=$keys CLIENTS=${CLIENTS:-256} SECONDS_MEASURED=${SECONDS_MEASURED:-10} WORKLOADS=${WORKLOADS:-put,get} MOKVD_ARGS='${MOKVD_ARGS:-}')"

leader() { # "<leader name> term <term>", from `mokv status`
    client --endpoints "$endpoints" --output json status 2>/dev/null | python3 -c '
import json, sys
doc = json.load(sys.stdin)
members = doc["members"] if isinstance(doc, dict) else doc
print(" ".join(f"{m['"'"'name'"'"']} term {m['"'"'term'"'"']}" for m in members if m.get("role") == "leader"))
' || true
}
client --endpoints "$endpoints" bench --wait-voters 3 --clients 1 --seconds 1 --warmup-seconds 0 \
    --keys 1 --workloads get >/dev/null 2>&1 || true
leader_before="$(leader)"

echo "== load 0 -> $keys keys, then a measured window at $keys keys"
client --endpoints "$endpoints" bench --clients "${CLIENTS:-256}" \
    --seconds "${SECONDS_MEASURED:-10}" --warmup-seconds 1 --keys "$keys" \
    --workloads "${WORKLOADS:-put,get}" \
    --pid "n1=${pids[0]}" --pid "n2=${pids[1]}" --pid "n3=${pids[2]}" 2>&1
leader_after="$(leader)"
echo "leader before the load: ${leader_before:-?}, after: ${leader_after:-?}"
for i in 0 1 2; do
    read -r rss hwm < <(rss_mib "${pids[$i]}")
    echo "n$((i + 1)): RSS $rss MiB, peak $hwm MiB ($(du -smD "$dir/data/n$((i + 1))" | cut -f1) MiB on disk)"
    gauges="$(memory_gauges "n$((i + 1))")"
    [ -z "$gauges" ] || echo "n$((i + 1)) gauges: $gauges"
    writes="$(slow_writes "n$((i + 1))")"
    [ -z "$writes" ] || echo "n$((i + 1)) disk: $writes"
done

echo "== restart of n3 to its first linearizable read"
key_hex="$(printf 'k%015d' 0)"
n3_pid="${pids[2]}"
l3="$(listening n3)"
ep3="$(field "$l3" advertised)"
gossip3="$(field "$l3" gossip)"
one_read() { # $1 = endpoint; one linearizable get answered by that node
    # A short call timeout: the CLI's own retries back off to 1 s between attempts, which
    # would measure its backoff rather than the node; the loop below starts a fresh attempt.
    client --endpoints "$1" --no-discovery --read-from any --call-timeout-ms 250 \
        get "$key_hex" >/dev/null 2>&1
}
# Retries one_read against $1 every $3 s until it is answered; gives up (exit 1) once $2 s have
# passed since t0, naming node $4.
await_read() {
    until one_read "$1"; do
        if [ $(( $(date +%s%N) - t0 )) -gt $(( $2 * 1000000000 )) ]; then
            echo "$4 served no read within $2 s" >&2
            exit 1
        fi
        sleep "$3"
    done
}
live="$(field "$(listening n1)" advertised)"
for _ in 1 2 3; do one_read "$live"; done
t0=$(date +%s%N)
for _ in 1 2 3 4 5; do one_read "$live"; done
echo "one CLI read against a running node: $(( ($(date +%s%N) - t0) / 5000000 )) ms"
for run in $(seq "${RESTARTS:-3}"); do
    t_stop=$(date +%s%N)
    cpu1="$(cpu_ms "${pids[0]}")" cpu2="$(cpu_ms "${pids[1]}")"
    kill -TERM "$n3_pid"
    wait "$n3_pid" 2>/dev/null || true
    t0=$(date +%s%N)
    echo "restart $run: stopped (SIGTERM to exit) after $(( (t0 - t_stop) / 1000000 )) ms"
    # "server drained" (info, restarts after the first) or the drain bound's warning.
    { grep -h -E "server drained|drain bound" "$dir/n3.log" || true; } | sed 's/^/  /'
    # At the same addresses, as a restarted production node would be: the time measured is the
    # node's own start, not the cluster learning a new address.
    # At log level info: the node logs how long loading and replaying took.
    LOG_LEVEL=info RPC_PORT="${ep3##*:}" GOSSIP_ADDR="$gossip3" start n3
    n3_pid="$started_pid"
    l3="$(listening n3)"
    t_listen=$(date +%s%N)
    ep="$(field "$l3" advertised)"
    await_read "$ep" 120 0.01 n3
    t_read=$(date +%s%N)
    read -r rss hwm < <(rss_mib "$n3_pid")
    echo "restart $run: listening after $(( (t_listen - t0) / 1000000 )) ms, first linearizable read after $(( (t_read - t0) / 1000000 )) ms; RSS $rss MiB, peak $hwm MiB"
    # The other nodes share the machine's cores: their work (a snapshot, a compaction, catching
    # up) while n3 stops and starts is time n3 may wait for a core.
    echo "  meanwhile n1 used $(( $(cpu_ms "${pids[0]}") - cpu1 )) ms of CPU, n2 $(( $(cpu_ms "${pids[1]}") - cpu2 )) ms (in $(( (t_read - t_stop) / 1000000 )) ms)"
    # "loaded raft store … ms=N" and "replayed the raft log on the snapshot log_entries=N ms=N"
    sed -n -E 's/.*(loaded raft store|replayed the raft log on the snapshot) (.*)/  \1: \2/p' "$dir/n3.log"
done

if [ "${LEARNER:-0}" = 1 ]; then
    echo "== n4 (empty data dir) joins and catches up"
    t0=$(date +%s%N)
    start n4 --start-join-addrs "$(field "$(listening n1)" gossip)"
    n4_pid="$started_pid"
    ep4="$(field "$(listening n4)" advertised)"
    await_read "$ep4" 1800 0.1 n4
    t_read=$(date +%s%N)
    read -r rss hwm < <(rss_mib "$n4_pid")
    # State bytes as the quota counts them: key + value + 32 bytes per key.
    echo "n4: first linearizable read after $(( (t_read - t0) / 1000000 )) ms; RSS $rss MiB, peak $hwm MiB, $(du -sm "$dir/data/n4" | cut -f1) MiB on disk; data set $(( keys * (16 + 256 + 32) / 1048576 )) MiB of state bytes"
fi

if [ "${REWRITE:-0}" = 1 ]; then
    echo "== every key written once more"
    client --endpoints "$endpoints" bench --clients "${CLIENTS:-256}" --seconds 1 \
        --warmup-seconds 0 --keys "$keys" --workloads put 2>&1 | grep -E "^preloaded" || true
    rewritten=(n1 n2 n3)
    [ "${LEARNER:-0}" = 1 ] && rewritten+=(n4)
    for name in "${rewritten[@]}"; do
        case "$name" in
            n3) pid="$n3_pid" ;;
            n4) pid="$n4_pid" ;;
            *) pid="${pids[$(( ${name#n} - 1 ))]}" ;;
        esac
        read -r rss hwm < <(rss_mib "$pid")
        echo "$name: RSS $rss MiB, peak $hwm MiB after the rewrite"
    done
fi
