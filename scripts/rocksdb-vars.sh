# shellcheck shell=bash
# Sourced by scripts/setup.sh and scripts/env.sh (bash): works out which prebuilt static RocksDB
# this checkout needs and where it lives. Defines only MOKV_* shell variables; exports nothing,
# never exits (so it is safe inside an interactive shell) and returns non-zero when it cannot
# tell.
#
#   MOKV_ROOT                 the workspace root (the directory holding Cargo.lock)
#   MOKV_CACHE_DIR            ${MOKV_CACHE:-$HOME/.cache/mokv}
#   MOKV_ROCKSDB_SYS_VERSION  librocksdb-sys version from Cargo.lock, e.g. 0.19.0+11.8.1
#   MOKV_ROCKSDB_FEATURES     features of the root Cargo.toml's `rocksdb` dependency that reach
#                             librocksdb-sys (space separated)
#   MOKV_ROCKSDB_TAG          the C++-relevant ones joined by '-', e.g. "snappy" ("none" if none)
#   MOKV_ROCKSDB_DIR          $MOKV_CACHE_DIR/rocksdb-<version>-<tag>: librocksdb.a (+ libsnappy.a)
#   MOKV_ROCKSDB_CPU          -C target-cpu used for the C++ build ("" = compiler default)
#   MOKV_ROCKSDB_RECIPE       one line describing the build; the marker file holds it, so a
#                             change of recipe rebuilds

mokv_rocksdb_vars() {
    local here lock toml line feats f
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" || return 1
    MOKV_ROOT="$(cd "$here/.." && pwd)" || return 1
    lock="$MOKV_ROOT/Cargo.lock"
    toml="$MOKV_ROOT/Cargo.toml"
    MOKV_CACHE_DIR="${MOKV_CACHE:-$HOME/.cache/mokv}"

    MOKV_ROCKSDB_SYS_VERSION="$(awk '
        $0 == "name = \"librocksdb-sys\"" { found = 1; next }
        found && /^version = / { gsub(/^version = "|"$/, ""); print; exit }' "$lock" 2>/dev/null)"
    if [ -z "$MOKV_ROCKSDB_SYS_VERSION" ]; then
        echo "mokv: no librocksdb-sys in $lock (run 'cargo generate-lockfile')" >&2
        return 1
    fi

    # The single-line `rocksdb = { ... }` in [workspace.dependencies].
    line="$(grep -E '^rocksdb[[:space:]]*=' "$toml" | head -n 1)"
    if [ -z "$line" ]; then
        echo "mokv: no 'rocksdb = { ... }' line in $toml" >&2
        return 1
    fi
    feats="$(printf '%s\n' "$line" | sed -n 's/.*features[[:space:]]*=[[:space:]]*\[\([^]]*\)\].*/\1/p' | tr -d '"[:space:]' | tr ',' ' ')"
    if ! printf '%s\n' "$line" | grep -Eq 'default-features[[:space:]]*=[[:space:]]*false'; then
        # rocksdb's own default feature set.
        feats="snappy lz4 zstd zlib bzip2 bindgen-runtime $feats"
    fi
    MOKV_ROCKSDB_FEATURES=""
    local tag=""
    for f in $(printf '%s\n' $feats | sort -u); do
        case "$f" in
            # Features that change the C++ build (and so the prebuilt library).
            snappy | lz4 | zstd | zlib | bzip2 | rtti | jemalloc | lto | io-uring | mt_static)
                MOKV_ROCKSDB_FEATURES="$MOKV_ROCKSDB_FEATURES $f"
                tag="${tag:+$tag-}$f" ;;
            # librocksdb-sys features that do not touch the C++.
            bindgen-runtime | bindgen-static)
                MOKV_ROCKSDB_FEATURES="$MOKV_ROCKSDB_FEATURES $f" ;;
            *) ;; # rocksdb-only features (serde1, multi-threaded-cf, ...)
        esac
    done
    MOKV_ROCKSDB_FEATURES="${MOKV_ROCKSDB_FEATURES# }"
    MOKV_ROCKSDB_TAG="${tag:-none}"
    MOKV_ROCKSDB_DIR="$MOKV_CACHE_DIR/rocksdb-$MOKV_ROCKSDB_SYS_VERSION-$MOKV_ROCKSDB_TAG"

    # RocksDB picks SSE4.2 (hardware CRC32C) etc. from the Rust target features of its build;
    # the baseline x86-64 target has none. x86-64-v2 (2009+) is safe wherever the CPU has it.
    MOKV_ROCKSDB_CPU=""
    if [ "$(uname -m)" = x86_64 ] && grep -qw sse4_2 /proc/cpuinfo 2>/dev/null \
        && grep -qw popcnt /proc/cpuinfo 2>/dev/null; then
        MOKV_ROCKSDB_CPU="x86-64-v2"
    fi
    MOKV_ROCKSDB_RECIPE="recipe=1 librocksdb-sys=$MOKV_ROCKSDB_SYS_VERSION features=${MOKV_ROCKSDB_FEATURES// /,} target-cpu=${MOKV_ROCKSDB_CPU:-default} profile=release"
}
