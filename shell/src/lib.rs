//! The tokio shell: moves bytes between sockets, RocksDB and `mokv-core`. Holds no protocol decisions.
