#!/usr/bin/env bash
# What a backup costs a node with KEYS keys (default 100000, 16-byte keys, VALUE_BYTES-byte
# values, default 256): time on the driver (read round + one clone of the key map) and time to
# encode the copy off the driver, RUNS times (default 5). Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo run --release -q -p mokv-core --example backup_cost
