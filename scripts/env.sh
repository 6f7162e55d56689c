# shellcheck shell=bash
# Source me (bash):  source scripts/env.sh
# Points cargo at the prebuilt static RocksDB that scripts/setup.sh keeps in
# ${MOKV_CACHE:-$HOME/.cache/mokv}/rocksdb-<librocksdb-sys version>-<features>/, so that no build
# shape (build, test, clippy, -p subsets, ...) compiles RocksDB's C++ (librocksdb-sys's build
# script then only runs bindgen and emits link flags: seconds). Also sets one shared
# CARGO_TARGET_DIR outside the work tree (default ${MOKV_CACHE:-$HOME/.cache/mokv}/target) unless
# one is already set. Run scripts/setup.sh first; it is quick once the library exists.
# Never changes RUSTFLAGS (a change would rebuild everything).

_mokv_env() {
    # shellcheck source=rocksdb-vars.sh
    source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/rocksdb-vars.sh" || return 1
    mokv_rocksdb_vars || return 1
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MOKV_CACHE_DIR/target}"
    if [ ! -f "$MOKV_ROCKSDB_DIR/.complete" ] || [ ! -f "$MOKV_ROCKSDB_DIR/librocksdb.a" ]; then
        echo "mokv env: no prebuilt RocksDB in $MOKV_ROCKSDB_DIR: run scripts/setup.sh first" >&2
        return 1
    fi
    export ROCKSDB_LIB_DIR="$MOKV_ROCKSDB_DIR"
    export ROCKSDB_STATIC=1
    case " $MOKV_ROCKSDB_FEATURES " in
        *" snappy "*)
            export SNAPPY_LIB_DIR="$MOKV_ROCKSDB_DIR"
            export SNAPPY_STATIC=1
            ;;
    esac
}
_mokv_env
