//! Audit log benchmark, store level: how many call records per second the embedded store
//! takes, with one appender and with 64 at once, and the latency of one append — both ways
//! an append can be durable against a killed gateway:
//! - **committed**: each append waits for its SQLite commit (group commit shares one among
//!   concurrent appenders); what `audit.fsync = true` uses, with an fsync per commit;
//! - **journaled**: each append is written to the audit journal and committed by a flush
//!   every 20 ms, as the gateway does by default. Its rates count a record once it is
//!   committed (the run ends with the last flush).
//!
//! `cargo bench -p toolgate-store --bench audit`. The end-to-end figures (through the real
//! proxy) are `cargo bench -p toolgate-gateway --bench proxy`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use support::record;
use toolgate_store::{AuditLog, EmbeddedStore};

mod support;

const SINGLE: usize = 5_000;
const THREADS: usize = 64;
const PER_THREAD: usize = 500;
/// How often the gateway flushes journaled entries into the database.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// One append, waiting for whatever makes it durable.
fn append(store: &EmbeddedStore, n: usize) {
    let entry = [record(n)];
    let mut future = AuditLog::append(store, &entry);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(outcome) = future.as_mut().poll(&mut cx) {
            return outcome.expect("append");
        }
        std::thread::yield_now();
    }
}

/// Appends from one thread, then from `THREADS`; prints the rates, and checks the chain.
fn measure(label: &str, store: &Arc<EmbeddedStore>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (store, stop) = (Arc::clone(store), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(FLUSH_EVERY);
                store.flush_audit().expect("flush");
            }
        })
    };
    let before = store.audit_verify().expect("verify")[0]
        .as_ref()
        .expect("chain holds")
        .entries;

    let mut latencies: Vec<Duration> = Vec::with_capacity(SINGLE);
    let started = Instant::now();
    for n in 0..SINGLE {
        let t = Instant::now();
        append(store, n);
        latencies.push(t.elapsed());
    }
    store.flush_audit().expect("flush");
    let single_rate = SINGLE as f64 / started.elapsed().as_secs_f64();
    latencies.sort();

    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(store);
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    append(&store, t * PER_THREAD + i);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("appender");
    }
    store.flush_audit().expect("flush");
    let concurrent_rate = (THREADS * PER_THREAD) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    flusher.join().expect("flusher");
    let entries = store.audit_verify().expect("verify")[0]
        .as_ref()
        .expect("chain holds")
        .entries;
    assert_eq!(entries - before, (SINGLE + THREADS * PER_THREAD) as u64);

    println!(
        "{label:<10} 1 appender {single_rate:>7.0} records/s (p50 {:>5.1} µs, p99 {:>6.1} µs per append) | {THREADS} appenders {concurrent_rate:>7.0} records/s; chain of {entries} verified",
        latencies[latencies.len() / 2].as_secs_f64() * 1e6,
        latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e6,
    );
}

fn main() {
    let dir = std::env::temp_dir().join(format!("toolgate-bench-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(EmbeddedStore::open(&dir).expect("embedded store"));
    println!("embedded audit log, store level (records durable against a killed process):");
    measure("committed", &store);
    store.journal_audit().expect("journal");
    measure("journaled", &store);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
