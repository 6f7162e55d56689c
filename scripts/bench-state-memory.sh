#!/usr/bin/env bash
# Memory per key of the data map and the memory peak of a snapshot, for the persistent map the
# core uses (entries: one shared block per key in the core's own persistent B+tree, an O(1) clone
# encoded on another thread while writes continue), the same blocks in imbl's OrdSet
# (imbl-entries), imbl's B-tree of String keys to Versioned values (imbl), and a BTreeMap
# (encoded from the live map, writes wait): KEYS keys (default 1000000, 16-byte keys,
# VALUE_BYTES-byte values, default 256), RUNS runs of each (default 3; take the medians).
# Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release -q --locked -p mokv-core --example state_memory
bin="${CARGO_TARGET_DIR:-target}/release/examples/state_memory"
for run in $(seq "${RUNS:-3}"); do
    for map in ${MAPS:-entries imbl-entries imbl btree}; do
        echo "run $run: $(MAP=$map "$bin")"
    done
done
