# Sourced by the benchmark scripts: a local 3-node mokv cluster of RELEASE binaries with mutual
# TLS (certificates from `mokvd certs`), data on the local disk. Defines `mokvd`, `mokv`, `dir`,
# `pids`, the functions below, and an EXIT trap that stops the nodes and removes `dir` (unless
# BENCH_DIR was given).
# Environment: NO_BUILD=1 (use the release binaries already built), BIN_DIR (take mokvd and mokv
# from here; implies NO_BUILD=1), BENCH_DIR (where data and certificates go; default: a fresh
# directory under the target dir, on the disk the build uses, not a tmpfs), MOKVD_ARGS (extra
# flags for every node), LOG_LEVEL (of every node; default warn), METRICS=1 (every node serves
# plain-HTTP metrics on a free port, written with its other ports to $dir/<node>.ports),
# TMPFS_NODES (node names, e.g. "n2 n3": their data dirs go to a fresh directory on /dev/shm,
# removed at exit, so that the other nodes have the disk to themselves; this machine has one
# disk, and a node with its own disk is what a real cluster runs).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
cd "$root"
if [ "${NO_BUILD:-0}" != 1 ] && [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -q --locked -p mokv-shell -p mokv-client --bins
fi
bin="${BIN_DIR:-$CARGO_TARGET_DIR/release}"
mokvd="$bin/mokvd"
mokv="$bin/mokv"

dir="${BENCH_DIR:-$(mktemp -d "$CARGO_TARGET_DIR/bench.XXXXXX")}"
mkdir -p "$dir/data"
shm=""
if [ -n "${TMPFS_NODES:-}" ]; then
    shm="$(mktemp -d /dev/shm/mokv-bench.XXXXXX)"
    for name in ${TMPFS_NODES//,/ }; do
        rm -rf "${dir:?}/data/$name"
        mkdir -p "$shm/$name"
        ln -s "$shm/$name" "$dir/data/$name"
    done
fi
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ -n "$shm" ]; then
        rm -rf "$shm"
    fi
    if [ -z "${BENCH_DIR:-}" ]; then
        rm -rf "$dir"
    fi
}
trap cleanup EXIT

"$mokvd" certs --out "$dir/certs" --node n1 --node n2 --node n3 --node n4 --client root >/dev/null

# Starts node $1 (extra flags after it) on ephemeral ports (or on RPC_PORT and GOSSIP_ADDR when
# set: a restart at the same addresses); its log goes to $dir/$1.log (truncated), its pid to
# pids[] and to `started_pid`.
start() {
    local name="$1"
    shift
    # shellcheck disable=SC2086
    "$mokvd" --data-dir "$dir/data/$name" --node-name "$name" \
        --cluster-key-file "$dir/certs/cluster.key" \
        --server-tls-cert-file "$dir/certs/$name.pem" \
        --server-tls-key-file "$dir/certs/$name-key.pem" \
        --server-tls-ca-file "$dir/certs/ca.pem" \
        --rpc-port "${RPC_PORT:-0}" --bind-addr "${GOSSIP_ADDR:-127.0.0.1:0}" --log-level "${LOG_LEVEL:-warn}" \
        --ports-file "$dir/$name.ports" ${METRICS:+--metrics-port 0 --metrics-plain-http} \
        ${MOKVD_ARGS:-} "$@" >"$dir/$name.log" 2>&1 &
    started_pid=$!
    pids+=("$started_pid")
}

# Waits for node $1's "mokvd listening on ... (advertised HOST:PORT, gossip HOST:PORT, raft id
# N)" line and prints it. $2: polls of 10 ms (default 3000).
listening() {
    local log="$dir/$1.log"
    for _ in $(seq 1 "${2:-3000}"); do
        if grep -q "^mokvd listening on" "$log" 2>/dev/null; then
            grep "^mokvd listening on" "$log"
            return 0
        fi
        sleep 0.01
    done
    echo "$0: $1 did not start:" >&2
    cat "$log" >&2
    return 1
}

# With METRICS=1 (nodes started with a plain-HTTP metrics port): runs the Python program on
# stdin with node $1's /metrics text in `text` (nothing if the node serves none).
with_metrics() {
    local addr
    addr="$(sed -n 's/^metrics //p' "$dir/$1.ports" 2>/dev/null)"
    [ -n "$addr" ] || return 0
    python3 -c 'import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
exec(sys.stdin.read())' "$addr" || true
}

# Node $1's memory gauges in MiB, "process P, allocated A, allocator resident R, state S, log
# in memory L" (empty without METRICS=1).
memory_gauges() {
    with_metrics "$1" <<'PY'
v = {}
for line in text.splitlines():
    if line and not line.startswith("#"):
        name, _, value = line.partition(" ")
        v[name] = float(value)
mib = lambda n: f"{v[n] / 1048576:.0f}" if n in v else "?"
print(f"process {mib('mokv_process_resident_bytes')}, allocated {mib('mokv_allocator_allocated_bytes')}, "
      f"allocator resident {mib('mokv_allocator_resident_bytes')}, state {mib('mokv_state_bytes')}, "
      f"log in memory {mib('mokv_log_in_memory_bytes')}, "
      f"watch history {mib('mokv_watch_history_bytes')} MiB")
PY
}

# Node $1's synced raft store writes since it started (every write waits for the one under
# way), "N synced writes: A over 20 ms, B over 50 ms, C over 100 ms" from the
# `mokv_persist_write_seconds` histogram (empty without METRICS=1).
slow_writes() {
    with_metrics "$1" <<'PY'
count, le = 0, {}
for line in text.splitlines():
    name, _, value = line.partition(" ")
    if name == "mokv_persist_write_seconds_count":
        count = int(float(value))
    elif name.startswith('mokv_persist_write_seconds_bucket{le="'):
        le[name.split('"')[1]] = int(float(value))
over = lambda bound: count - le.get(bound, count)
print(f"{count} synced writes: {over('0.02')} over 20 ms, {over('0.05')} over 50 ms, "
      f"{over('0.1')} over 100 ms")
PY
}

field() { # $1 = line, $2 = "advertised" | "gossip"
    sed -E "s/.*$2 ([^,)]+).*/\1/" <<<"$1"
}

# Starts n1 (bootstrap), n2 and n3 (joining n1 by gossip); sets `endpoints` (the three
# advertised addresses, comma-separated) and `join` (n1's gossip address).
start_cluster() {
    start n1 --bootstrap
    local l1 l2 l3
    l1="$(listening n1)"
    join="$(field "$l1" gossip)"
    start n2 --start-join-addrs "$join"
    start n3 --start-join-addrs "$join"
    l2="$(listening n2)"
    l3="$(listening n3)"
    endpoints="$(field "$l1" advertised),$(field "$l2" advertised),$(field "$l3" advertised)"
}

# The client with the benchmark's root certificate; arguments follow.
client() {
    "$mokv" --ca "$dir/certs/ca.pem" --cert "$dir/certs/root.pem" \
        --key "$dir/certs/root-key.pem" "$@"
}

machine_line() {
    echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)${BIN_DIR:+  binaries: $BIN_DIR (not built from this commit)}"
}

cpu_ms() { # CPU time (user + system) process $1 has used so far, in ms; 0 once it is gone
    if [ -r "/proc/$1/stat" ]; then
        # Past the command name (which may hold spaces), utime and stime are fields 12 and 13.
        awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1000 / hz }' \
            "/proc/$1/stat"
    else
        echo 0
    fi
}

# "VmRSS VmHWM" of process $1 in MiB.
rss_mib() {
    if [ -r "/proc/$1/status" ]; then
        awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "%.0f %.0f\n", r/1024, h/1024}' "/proc/$1/status"
    else
        echo "exited exited" # the node died: the report says so instead of stopping the script
    fi
}
