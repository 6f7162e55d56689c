#!/usr/bin/env bash
# Memory per key of a node's state and what a snapshot costs the driver: KEYS keys (default
# 1000000, 16-byte keys, VALUE_BYTES-byte values, default 256) loaded into a single-voter core
# node. Reports RSS growth per key, the slowest batch of 1,000 writes (a snapshot on the driver)
# and the time of one state clone (a snapshot job). Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo run --release -q -p mokv-core --example state_memory
