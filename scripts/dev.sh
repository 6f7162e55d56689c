#!/usr/bin/env bash
# Runs one mokv node on the embedded default (`mokvd --dev`): a single-node cluster in
# $HOME/.mokv-dev with a generated dev CA, server certificate and `root` client certificate.
# Prepares the machine first (scripts/setup.sh). Extra arguments go to mokvd.
# Then, in another shell:  source scripts/env.sh && cargo run -q --bin mokv -- set hello world
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh"
# shellcheck source=env.sh
source "$here/env.sh"
cd "$MOKV_ROOT"
cargo build -q -p mokv-shell -p mokv-client --bins
exec "$CARGO_TARGET_DIR/debug/mokvd" --dev "$@"
