//! `mokv bench`: concurrent clients write for a while, then read linearizably for a while;
//! prints throughput and latency percentiles of each phase.

use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use mokv_client::{Client, ClientConfig, ClientError, ReadMode};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent clients (each one request in flight).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Distinct keys per client.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
}

struct Outcome {
    hist: Histogram<u64>,
    errors: u64,
}

pub async fn run(config: &ClientConfig, args: &BenchArgs) -> Result<(), ClientError> {
    let value = vec![b'x'; args.value_bytes];
    println!(
        "bench: {} clients, {} s per phase, {}-byte values, {} endpoint(s)",
        args.clients,
        args.seconds,
        args.value_bytes,
        config.endpoints.len()
    );
    for phase in ["write", "read"] {
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        for c in 0..args.clients {
            let client = Client::connect(config.clone())?;
            let value = value.clone();
            let keys = args.keys.max(1);
            tasks.push(tokio::spawn(async move {
                let mut out = Outcome { hist: new_hist(), errors: 0 };
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let key = format!("bench/{c}/{}", i % keys);
                    i += 1;
                    let start = Instant::now();
                    let ok = if phase == "write" {
                        client.set(&key, &value).await.is_ok()
                    } else {
                        client.get(&key, ReadMode::Linearizable).await.is_ok()
                    };
                    if ok {
                        let us = start.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                        let _ = out.hist.record(us.max(1));
                    } else {
                        out.errors += 1;
                    }
                }
                out
            }));
        }
        let started = Instant::now();
        let mut total = Outcome { hist: new_hist(), errors: 0 };
        for t in tasks {
            if let Ok(o) = t.await {
                let _ = total.hist.add(&o.hist);
                total.errors += o.errors;
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let h = &total.hist;
        println!(
            "{phase:>5}: {:>9.0} ops/s  ({} ok, {} errors)  latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            h.len() as f64 / secs,
            h.len(),
            total.errors,
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.value_at_quantile(0.999) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
        );
    }
    Ok(())
}

fn new_hist() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}
