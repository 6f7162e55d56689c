#!/usr/bin/env bash
# The test command: prepares the machine (scripts/setup.sh: libclang, the prebuilt RocksDB, once),
# points cargo at the prebuilt library (scripts/env.sh) and runs the workspace's tests.
# Extra arguments go to `cargo test --workspace`, e.g. scripts/test.sh -p mokv-core -- --nocapture
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh"
# shellcheck source=env.sh
source "$here/env.sh"
cd "$MOKV_ROOT"
exec cargo test --workspace "$@"
