//! Counter store benchmark: reserves per second and latency per reserve, for the embedded
//! (SQLite) and the Redis store, with one caller and with 64 concurrent callers, against a
//! baseline measured in the same run (a call with no limits, i.e. no store work at all).
//!
//! Then the embedded store as the gateway uses it: one commit per call carrying the call's
//! audit record, with and without the call's counter reservation.
//!
//! `cargo bench -p toolgate-store` (Redis from TOOLGATE_TEST_REDIS_URL, default
//! redis://127.0.0.1:6379; skipped with a message when unreachable — this is a benchmark,
//! not a test).

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::record;
use toolgate_store::{Charge, CounterStore, EmbeddedStore, RedisCounterStore, Reserve};

mod support;

const SINGLE_CALLS: usize = 5_000;
const CONCURRENT_CALLERS: usize = 64;
const CALLS_PER_CALLER: usize = 200;

fn charge(key: &str) -> Vec<Charge> {
    // A budget no caller exhausts: every reserve does the full check-and-record work.
    vec![Charge {
        key: key.to_owned(),
        window_ms: 60_000,
        calendar: false,
        max: 1e12,
        amount: 1.0,
    }]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn single(store: &dyn CounterStore, key: &str) -> (f64, Duration, Duration) {
    let charges = charge(key);
    let mut latencies = Vec::with_capacity(SINGLE_CALLS);
    let started = Instant::now();
    for _ in 0..SINGLE_CALLS {
        let t = Instant::now();
        match store.reserve(&charges).await {
            Ok(Reserve::Granted(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
        latencies.push(t.elapsed());
    }
    let rate = SINGLE_CALLS as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (
        rate,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    )
}

async fn concurrent(store: Arc<dyn CounterStore>, key: &str) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT_CALLERS)
        .map(|_| {
            let store = Arc::clone(&store);
            let charges = charge(key);
            tokio::spawn(async move {
                for _ in 0..CALLS_PER_CALLER {
                    store.reserve(&charges).await.expect("reserve");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    (CONCURRENT_CALLERS * CALLS_PER_CALLER) as f64 / started.elapsed().as_secs_f64()
}

/// The baseline: what a call with no limits costs in this position (nothing but the
/// future's own overhead).
async fn baseline() -> Duration {
    let started = Instant::now();
    for _ in 0..SINGLE_CALLS {
        std::hint::black_box(async {}).await;
    }
    started.elapsed() / SINGLE_CALLS as u32
}

async fn report(name: &str, store: Arc<dyn CounterStore>, base: Duration) {
    let key = format!("bench-{}-{}", name, std::process::id());
    let (rate, p50, p99) = single(&*store, &key).await;
    let many = concurrent(Arc::clone(&store), &format!("{key}-c")).await;
    println!(
        "{name:>9}: 1 caller {rate:>9.0} reserves/s  p50 {:>7.1} µs  p99 {:>7.1} µs  (added over unlimited: {:.1} µs at p50) | {CONCURRENT_CALLERS} callers {many:>9.0} reserves/s",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        (p50.saturating_sub(base)).as_secs_f64() * 1e6,
    );
}

/// In the embedded store a call's record is committed before the call is forwarded, with
/// or without limits; a rate-limited call's reservation joins that same commit. So what a
/// limit adds is `reserve_and_append` over `append_audit`, measured here in alternation.
fn ledger(store: &EmbeddedStore) {
    let charges = charge("bench-ledger");
    let (mut unlimited, mut limited) = (Vec::new(), Vec::new());
    for n in 0..SINGLE_CALLS {
        let entry = [record(n)];
        let t = Instant::now();
        store.append_audit(&entry).expect("append");
        unlimited.push(t.elapsed());
        let t = Instant::now();
        match store.reserve_and_append(&charges, &entry) {
            Ok(Reserve::Granted(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
        limited.push(t.elapsed());
    }
    unlimited.sort();
    limited.sort();
    let (u, l) = (percentile(&unlimited, 0.5), percentile(&limited, 0.5));
    println!(
        "embedded, a call's commit: record only p50 {:.1} µs; record + reservation p50 {:.1} µs (a limit adds {:.1} µs)",
        u.as_secs_f64() * 1e6,
        l.as_secs_f64() * 1e6,
        (l.as_secs_f64() - u.as_secs_f64()) * 1e6,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let base = baseline().await;
        println!(
            "baseline (no limits): {:.3} µs per call",
            base.as_secs_f64() * 1e6
        );
        let dir = std::env::temp_dir().join(format!("toolgate-bench-{}", std::process::id()));
        let embedded: Arc<dyn CounterStore> =
            Arc::new(EmbeddedStore::open(&dir).expect("embedded store"));
        report("embedded", embedded, base).await;
        ledger(&EmbeddedStore::open(&dir.join("ledger")).expect("embedded store"));
        let _ = std::fs::remove_dir_all(&dir);

        let url = std::env::var("TOOLGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let redis = RedisCounterStore::connect(&url).expect("redis url");
        match redis.ping().await {
            Ok(()) => report("redis", Arc::new(redis), base).await,
            Err(e) => println!("    redis: not measured ({e})"),
        }
    });
}
