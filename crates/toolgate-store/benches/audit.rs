//! Audit log benchmark, store level: how many call records per second the embedded store
//! commits (each durable before its appender returns), with one appender and with 64 at
//! once (group commit), and the latency of one append.
//!
//! `cargo bench -p toolgate-store --bench audit`. The end-to-end figures (through the real
//! proxy) are `cargo bench -p toolgate-gateway --bench proxy`.

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::record;
use toolgate_store::EmbeddedStore;

mod support;

const SINGLE: usize = 5_000;
const THREADS: usize = 64;
const PER_THREAD: usize = 500;

fn main() {
    let dir = std::env::temp_dir().join(format!("toolgate-bench-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(EmbeddedStore::open(&dir).expect("embedded store"));

    let mut latencies: Vec<Duration> = Vec::with_capacity(SINGLE);
    let started = Instant::now();
    for n in 0..SINGLE {
        let entry = [record(n)];
        let t = Instant::now();
        store.append_audit(&entry).expect("append");
        latencies.push(t.elapsed());
    }
    let single_rate = SINGLE as f64 / started.elapsed().as_secs_f64();
    latencies.sort();

    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    store
                        .append_audit(&[record(t * PER_THREAD + i)])
                        .expect("append");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("appender");
    }
    let concurrent_rate = (THREADS * PER_THREAD) as f64 / started.elapsed().as_secs_f64();
    let verified = store.audit_verify().expect("verify");
    let entries = verified[0].as_ref().expect("chain holds").entries;
    assert_eq!(entries as usize, SINGLE + THREADS * PER_THREAD);

    println!(
        "embedded audit log: 1 appender {single_rate:>7.0} records/s (p50 {:.1} µs, p99 {:.1} µs per durable append) | {THREADS} appenders {concurrent_rate:>7.0} records/s (group commit); chain of {entries} verified",
        latencies[latencies.len() / 2].as_secs_f64() * 1e6,
        latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e6,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
