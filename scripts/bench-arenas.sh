#!/usr/bin/env bash
# Where each node's heap memory is: loads KEYS keys (16-byte keys, 256-byte values) into a local
# 3-node cluster (bench-cluster.sh: release binaries, mutual TLS), then has every node print
# glibc's malloc_info() (through gdb) and sums it up per arena: memory taken from the system,
# and the free space in it (bytes and chunks). Free space in many small chunks is holes between
# live blocks, which the process cannot give back.
# Usage: scripts/bench-arenas.sh     Environment: KEYS [1000000] CLIENTS [256] and those of
# bench-cluster.sh (NO_BUILD, BIN_DIR, BENCH_DIR, MOKVD_ARGS, LOG_LEVEL). Needs gdb and python3.
set -euo pipefail
# shellcheck source=bench-cluster.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench-cluster.sh"
command -v gdb >/dev/null || { echo "$0: needs gdb" >&2; exit 1; }
start_cluster
machine_line
client --endpoints "$endpoints" bench --wait-voters 3 --clients 1 --seconds 1 --warmup-seconds 0 \
    --keys 1 --workloads get >/dev/null 2>&1 || true
client --endpoints "$endpoints" bench --clients "${CLIENTS:-256}" --seconds 3 --warmup-seconds 1 \
    --keys "${KEYS:-1000000}" --workloads put 2>&1 | grep -E "preloaded|^\| put"
for i in 0 1 2; do
    gdb -p "${pids[$i]}" -batch -ex 'call (int)malloc_info(0, stderr)' >/dev/null 2>&1 ||
        echo "n$((i + 1)): gdb could not attach" >&2
done
sleep 0.5
for i in 1 2 3; do
    read -r rss hwm < <(rss_mib "${pids[$((i - 1))]}")
    echo "== n$i: RSS $rss MiB (arenas over 8 MiB, or with over 3 MiB free)"
    python3 - "$dir/n$i.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for m in re.finditer(r'<heap nr="(\d+)">(.*?)</heap>', text, re.S):
    body = m.group(2)
    rest = re.search(r'<total type="rest" count="(\d+)" size="(\d+)"/>', body)
    system = re.search(r'<system type="current" size="(\d+)"/>', body)
    taken, free, chunks = int(system.group(1)), int(rest.group(2)), int(rest.group(1))
    if taken > 8 << 20 or free > 3 << 20:
        print(f"arena {m.group(1)}: {taken / 2**20:.1f} MiB from the system, "
              f"{free / 2**20:.1f} MiB free in {chunks} chunks")
PY
done
