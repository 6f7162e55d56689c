//! Memory per key of the data map, and the memory peak of taking a snapshot, for three maps a
//! node's state can hold: `entries` (what the core uses, `mokv_core::DataMap`: its own
//! persistent B+tree of one shared block per key; a snapshot job is an O(1) clone encoded on
//! another thread while writes continue), `imbl-entries` (the same blocks in
//! `imbl::OrdSet<Entry>`, as before the core's own tree), `imbl` (imbl's B-tree of `String`
//! keys to `Versioned` values, as before the entries) and `btree` (a `std::collections::BTreeMap`, as before that:
//! the snapshot is encoded from the live map on the driver, so no write is applied until it is
//! done).
//!
//! Loads KEYS keys (default 1,000,000; 16-byte keys, VALUE_BYTES-byte values, default 256) as
//! entries into the map named by MAP (`entries`, `imbl-entries`, `imbl` or `btree`), then:
//! - reports the growth of the process RSS per key (the workspace forbids `unsafe`, so no
//!   counting allocator; the example allocates nothing else that lives);
//! - takes a snapshot the way the map allows and encodes it (per key, the canonical encoding:
//!   key, value, three u64s) into one buffer, as the shell does before handing it back to the
//!   node. With `imbl`, the main thread keeps overwriting keys (in key order, new values of the
//!   same size) while the encoder runs, up to WRITES writes (default 200,000), so the clone and
//!   the live map diverge as they would under load. Reports the peak RSS (VmHWM) over the
//!   loaded map, i.e. what the snapshot costs on top of the data, with the encoded buffer held.
//!
//! Run: `scripts/bench-state-memory.sh` (release build; runs both maps).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mokv_core::codec::Writer;
use mokv_core::{Entry, Versioned};

type Tree = mokv_core::DataMap;

/// What `DataMap::visit` passes each key to: key, value, `[create, mod, version]`.
type Visitor<'a> = dyn FnMut(&[u8], &[u8], [u64; 3]) + 'a;

/// The maps compared.
trait DataMap: Send + 'static {
    fn new() -> Self;
    fn insert(&mut self, key: String, value: Versioned);
    fn len(&self) -> usize;
    /// The keys in order, each passed to `f` with its value and revisions.
    fn visit(&self, f: &mut Visitor<'_>);
}

fn revisions(v: &Versioned) -> [u64; 3] {
    [v.create_index, v.mod_index, v.version]
}

impl DataMap for Tree {
    fn new() -> Self {
        Tree::new()
    }
    fn insert(&mut self, key: String, v: Versioned) {
        Tree::insert(self, Entry::new(&key, &v.value, v.create_index, v.mod_index, v.version));
    }
    fn len(&self) -> usize {
        Tree::len(self)
    }
    fn visit(&self, f: &mut Visitor<'_>) {
        for e in self.iter() {
            f(e.key_bytes(), e.value(), [e.create_index(), e.mod_index(), e.version()]);
        }
    }
}

impl DataMap for imbl::OrdSet<Entry> {
    fn new() -> Self {
        imbl::OrdSet::new()
    }
    fn insert(&mut self, key: String, v: Versioned) {
        imbl::OrdSet::insert(
            self,
            Entry::new(&key, &v.value, v.create_index, v.mod_index, v.version),
        );
    }
    fn len(&self) -> usize {
        imbl::OrdSet::len(self)
    }
    fn visit(&self, f: &mut Visitor<'_>) {
        for e in self.iter() {
            f(e.key_bytes(), e.value(), [e.create_index(), e.mod_index(), e.version()]);
        }
    }
}

impl DataMap for imbl::OrdMap<String, Versioned> {
    fn new() -> Self {
        imbl::OrdMap::new()
    }
    fn insert(&mut self, key: String, value: Versioned) {
        imbl::OrdMap::insert(self, key, value);
    }
    fn len(&self) -> usize {
        imbl::OrdMap::len(self)
    }
    fn visit(&self, f: &mut Visitor<'_>) {
        for (k, v) in self.iter() {
            f(k.as_bytes(), &v.value, revisions(v));
        }
    }
}

impl DataMap for BTreeMap<String, Versioned> {
    fn new() -> Self {
        BTreeMap::new()
    }
    fn insert(&mut self, key: String, value: Versioned) {
        BTreeMap::insert(self, key, value);
    }
    fn len(&self) -> usize {
        BTreeMap::len(self)
    }
    fn visit(&self, f: &mut Visitor<'_>) {
        for (k, v) in self {
            f(k.as_bytes(), &v.value, revisions(v));
        }
    }
}

/// `field` of /proc/self/status (VmRSS, VmHWM) in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn key(i: usize) -> String {
    format!("key-{i:012}") // 16 bytes
}

fn versioned(value_bytes: usize, index: u64, fill: u8) -> Versioned {
    Versioned { value: vec![fill; value_bytes], create_index: index, mod_index: index, version: 1 }
}

/// The encoding of every key, in one buffer of exactly `encoded_bytes` (the shell knows the
/// length before encoding; see `SnapshotJob::encoded_len`).
fn encode<M: DataMap>(map: &M, encoded_bytes: usize) -> Vec<u8> {
    let mut w = Writer::with_capacity(encoded_bytes);
    w.put_u64(map.len() as u64);
    map.visit(&mut |k, v, [create, modified, version]| {
        w.put_bytes(k);
        w.put_bytes(v);
        w.put_u64(create);
        w.put_u64(modified);
        w.put_u64(version);
    });
    w.finish()
}

struct Report {
    rss_growth_bytes: u64,
    snapshot_peak_bytes: u64,
    encode: Duration,
    writes_during_encode: usize,
}

/// Loads the map, then snapshots it: on another thread from an O(1) clone while writes go on
/// (`clone_and_write`), or on this thread from the live map.
fn run<M: DataMap + Clone>(keys: usize, value_bytes: usize, clone_and_write: bool) -> Report {
    let writes = env("WRITES", 200_000);
    let rss_before = status_bytes("VmRSS:");
    let mut map = M::new();
    for i in 0..keys {
        map.insert(key(i), versioned(value_bytes, i as u64 + 1, 7));
    }
    let loaded = status_bytes("VmRSS:");
    let encoded_bytes = 8 + keys * (4 + 16 + 4 + value_bytes + 24);
    let t = Instant::now();
    let (bytes, writes_during_encode) = if clone_and_write {
        let snapshot = map.clone();
        let encoder = std::thread::spawn(move || encode(&snapshot, encoded_bytes));
        let mut n = 0;
        while n < writes && !encoder.is_finished() {
            let index = (keys + n) as u64 + 1;
            map.insert(key(n % keys), versioned(value_bytes, index, 8));
            n += 1;
        }
        (encoder.join().expect("encoder"), n)
    } else {
        (encode(&map, encoded_bytes), 0)
    };
    let encode_time = t.elapsed();
    assert_eq!(bytes.len(), encoded_bytes);
    let peak = status_bytes("VmHWM:");
    assert_eq!(map.len(), keys);
    drop(bytes);
    Report {
        rss_growth_bytes: loaded.saturating_sub(rss_before),
        snapshot_peak_bytes: peak.saturating_sub(loaded),
        encode: encode_time,
        writes_during_encode,
    }
}

fn main() {
    let keys = env("KEYS", 1_000_000);
    let value_bytes = env("VALUE_BYTES", 256);
    let map = std::env::var("MAP").unwrap_or_else(|_| "imbl".into());
    let report = match map.as_str() {
        "entries" => run::<Tree>(keys, value_bytes, true),
        "imbl-entries" => run::<imbl::OrdSet<Entry>>(keys, value_bytes, true),
        "imbl" => run::<imbl::OrdMap<String, Versioned>>(keys, value_bytes, true),
        "btree" => run::<BTreeMap<String, Versioned>>(keys, value_bytes, false),
        other => panic!("MAP must be entries, imbl-entries, imbl or btree, not {other}"),
    };
    let per_key = |b: u64| b as f64 / keys as f64;
    println!(
        "map {map} keys {keys} value_bytes {value_bytes}: rss/key {:.1} B ({} MiB); snapshot \
         peak over the loaded map {} MiB ({:.1} B/key); encode {:.0} ms with {} writes meanwhile",
        per_key(report.rss_growth_bytes),
        report.rss_growth_bytes >> 20,
        report.snapshot_peak_bytes >> 20,
        per_key(report.snapshot_peak_bytes),
        report.encode.as_secs_f64() * 1e3,
        report.writes_during_encode,
    );
}
