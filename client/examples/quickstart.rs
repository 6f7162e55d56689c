//! A complete program using the mokv client: one shared client, concurrent writers, reads
//! spread over the followers, a paged scan as a stream.
//!
//! Start a node first (`scripts/dev.sh`, i.e. `mokvd --dev`), then:
//!
//! ```text
//! cargo run -p mokv-client --example quickstart                  # the --dev node
//! cargo run -p mokv-client --example quickstart -- 10.0.0.5:8400 # one node of any cluster
//! ```
//!
//! With a cluster of your own, point the TLS files at your CA and client certificate (the
//! `MOKV_CA`, `MOKV_CERT`, `MOKV_KEY` variables here; the `--dev` node's files by default).

use std::path::PathBuf;
use std::time::Duration;

use mokv_client::{
    default_dev_dir, Client, ClientConfig, ClientError, RangeOptions, ReadFrom, ReadMode,
    ReadOptions, Stream, TlsFiles,
};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    // One address is enough: the client asks it for the other members (GetServers).
    let seed = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8400".to_owned());
    let dev = TlsFiles::dev(&default_dev_dir());
    let file = |var: &str, default: PathBuf| std::env::var_os(var).map_or(default, PathBuf::from);
    let tls = TlsFiles {
        ca: file("MOKV_CA", dev.ca),
        cert: file("MOKV_CERT", dev.cert),
        key: file("MOKV_KEY", dev.key),
    };
    let mut config = ClientConfig::new(vec![seed], tls);
    config.call_timeout = Duration::from_secs(10); // a call, retries included, takes at most this
    let client = Client::connect(config)?;

    // Clones share the connections and sessions: hand one to every task.
    let mut writers = Vec::new();
    for w in 0..8 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                // Retried safely after a lost answer: the session makes it apply once.
                client.set(&format!("quickstart/{w}/{i}"), b"hello").await?;
            }
            Ok::<(), ClientError>(())
        }));
    }
    for w in writers {
        match w.await {
            Ok(r) => r?,
            Err(e) => eprintln!("a writer task failed: {e}"),
        }
    }

    // A linearizable read (the default), served by a follower.
    let e = client.get("quickstart/0/0", ReadMode::Linearizable).await?;
    println!("quickstart/0/0 = {:?}", e.map(|e| String::from_utf8_lossy(&e.value).into_owned()));
    // Per call: from the leader, and serializable (the node's local state, may be stale).
    let opts = ReadOptions::new().from(ReadFrom::Leader).mode(ReadMode::Serializable);
    let _ = client.get("quickstart/0/1", opts).await?;

    // Every key under a prefix, page by page, as a stream.
    let opts = RangeOptions { page_size: 50, keys_only: true, ..RangeOptions::default() };
    let mut keys = Box::pin(client.range_stream("quickstart/", opts));
    let mut count = 0;
    while let Some(entry) = next(&mut keys).await {
        entry?;
        count += 1;
    }
    println!("{count} keys under quickstart/");

    // What the client learned about the cluster.
    for n in client.nodes() {
        println!("{:<24} {:?} {} answered {}", n.addr, n.role, n.health, n.answered);
    }
    Ok(())
}

/// The next item of a stream (`futures::StreamExt::next` does the same).
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}
