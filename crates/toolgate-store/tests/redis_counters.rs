//! The Redis counter store against a real Redis.
//!
//! Most tests use the Redis at `127.0.0.1:6379` (override with `TOOLGATE_TEST_REDIS_URL`),
//! each under its own random key prefix, so they run in parallel and repeatedly. Without
//! that Redis they fail, saying so: they never skip. The outage tests start private
//! `redis-server` processes on spare ports (the binary must be on PATH).

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolgate_store::counters::window::{self, Entry};
use toolgate_store::redis_counters::DEFAULT_KEY_PREFIX;
use toolgate_store::{Charge, CounterStore, RedisCounterStore, Reservation, Reserve};

fn redis_url() -> String {
    std::env::var("TOOLGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test run uses.
fn unique_prefix() -> String {
    format!("toolgate-test:{}:", support::unique_name(':'))
}

/// A store on the shared test Redis under a fresh prefix; fails the test if Redis is absent.
async fn store_with_prefix(prefix: &str) -> RedisCounterStore {
    let url = redis_url();
    let store = RedisCounterStore::connect(&url)
        .unwrap()
        .with_key_prefix(prefix);
    if let Err(e) = store.ping().await {
        panic!(
            "these tests need a Redis server at {url} (set TOOLGATE_TEST_REDIS_URL to use \
             another): {e}"
        );
    }
    store
}

async fn store() -> RedisCounterStore {
    store_with_prefix(&unique_prefix()).await
}

/// A plain connection for looking at what the store wrote.
async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the test Redis must be reachable")
}

async fn server_now_ms(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1000 + micros / 1000
}

fn rolling(key: &str, window_ms: u64, max: f64, amount: f64) -> Charge {
    Charge::rolling(key, window_ms, max, amount)
}

fn calendar(key: &str, window_ms: u64, max: f64, amount: f64) -> Charge {
    Charge::calendar(key, window_ms, max, amount)
}

fn granted(answer: Reserve) -> Reservation {
    match answer {
        Reserve::Granted(r) => r,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn exceeded(answer: Reserve) -> (usize, u64) {
    match answer {
        Reserve::Exceeded {
            charge,
            retry_after_ms,
        } => (charge, retry_after_ms),
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// The server time of a grant, from its id (`<nonce>@<at_ms>`).
fn granted_at(reservation: &Reservation) -> u64 {
    reservation.id.rsplit_once('@').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_cap_admits_exactly_max_of_a_burst() {
    let store = Arc::new(store().await);
    let charges = [rolling("burst", 60_000, 5.0, 1.0)];
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let store = store.clone();
            let charges = charges.clone();
            tokio::spawn(async move { store.reserve(&charges).await.unwrap() })
        })
        .collect();
    let mut grants = 0;
    for task in tasks {
        match task.await.unwrap() {
            Reserve::Granted(_) => grants += 1,
            Reserve::Exceeded {
                charge,
                retry_after_ms,
            } => {
                assert_eq!(charge, 0);
                // The oldest grant leaves the window a minute after it was made.
                assert!(
                    (55_000..=60_000).contains(&retry_after_ms),
                    "{retry_after_ms}"
                );
            }
        }
    }
    assert_eq!(grants, 5);
}

#[tokio::test]
async fn a_rolling_window_frees_its_oldest_entry_at_the_announced_time() {
    let store = store().await;
    let charge = [rolling("short", 300, 2.0, 1.0)];
    granted(store.reserve(&charge).await.unwrap());
    granted(store.reserve(&charge).await.unwrap());
    let (_, retry) = exceeded(store.reserve(&charge).await.unwrap());
    assert!((1..=300).contains(&retry), "{retry}");
    tokio::time::sleep(Duration::from_millis(retry + 15)).await;
    granted(store.reserve(&charge).await.unwrap());
}

#[tokio::test]
async fn a_calendar_window_resets_at_its_boundary() {
    let store = store().await;
    let mut conn = raw().await;
    // Start early in a server second, so the whole burst falls into one calendar second.
    let now = server_now_ms(&mut conn).await;
    if now % 1000 > 700 {
        tokio::time::sleep(Duration::from_millis(1000 - now % 1000 + 5)).await;
    }
    let before = server_now_ms(&mut conn).await;
    let charge = [calendar("cal", 1000, 3.0, 1.0)];
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(store.reserve(&charge).await.unwrap());
    }
    let after = server_now_ms(&mut conn).await;
    assert_eq!(before / 1000, after / 1000, "the burst took too long");
    let grants = answers
        .iter()
        .filter(|a| matches!(a, Reserve::Granted(_)))
        .count();
    assert_eq!(grants, 3, "{answers:?}");
    let retry = exceeded(answers.pop().unwrap()).1;
    // The denial was made between `before` and `after`: it waits for the next second.
    let earliest = 1000 - after % 1000;
    let latest = 1000 - before % 1000;
    assert!(
        (earliest..=latest).contains(&retry),
        "{retry} not in {earliest}..={latest}"
    );
    tokio::time::sleep(Duration::from_millis(retry + 5)).await;
    for _ in 0..3 {
        granted(store.reserve(&charge).await.unwrap());
    }
    exceeded(store.reserve(&charge).await.unwrap());
}

#[tokio::test]
async fn charges_are_reserved_all_or_none() {
    let store = store().await;
    let both = [
        rolling("wide", 60_000, 10.0, 1.0),
        rolling("narrow", 60_000, 1.0, 1.0),
    ];
    let first = granted(store.reserve(&both).await.unwrap());
    assert_eq!(first.keys, vec!["wide".to_string(), "narrow".to_string()]);
    assert_eq!(exceeded(store.reserve(&both).await.unwrap()).0, 1);
    // The refused call took nothing from `wide`: 9 are left there.
    granted(
        store
            .reserve(&[rolling("wide", 60_000, 10.0, 9.0)])
            .await
            .unwrap(),
    );
    exceeded(
        store
            .reserve(&[rolling("wide", 60_000, 10.0, 1.0)])
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn earlier_charges_of_a_call_count_for_later_ones_on_the_same_key() {
    let store = store().await;
    let twice = [
        rolling("same", 60_000, 3.0, 2.0),
        rolling("same", 60_000, 3.0, 2.0),
    ];
    let (charge, retry) = exceeded(store.reserve(&twice).await.unwrap());
    assert_eq!(charge, 1);
    // Only this call's own first charge would be in the way: it would leave after a window.
    assert_eq!(retry, 60_000);
    // Nothing was written: the whole budget is still there.
    granted(
        store
            .reserve(&[rolling("same", 60_000, 3.0, 3.0)])
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn fractional_amounts_add_up_without_rounding_surprises() {
    let store = store().await;
    let tenth = [rolling("spend", 60_000, 1.0, 0.1)];
    for _ in 0..10 {
        granted(store.reserve(&tenth).await.unwrap());
    }
    exceeded(store.reserve(&tenth).await.unwrap());
    // An amount above max never fits; the honest answer is a whole window.
    let (_, retry) = exceeded(
        store
            .reserve(&[rolling("other", 60_000, 1.0, 1.5)])
            .await
            .unwrap(),
    );
    assert_eq!(retry, 60_000);
}

#[tokio::test]
async fn a_rollback_gives_every_charge_back_once() {
    let store = store().await;
    let both = [
        rolling("a", 60_000, 1.0, 1.0),
        rolling("b", 60_000, 2.0, 2.0),
    ];
    let reservation = granted(store.reserve(&both).await.unwrap());
    exceeded(store.reserve(&both).await.unwrap());
    store.rollback(&reservation).await.unwrap();
    // A second rollback of the same reservation changes nothing.
    store.rollback(&reservation).await.unwrap();
    let again = granted(store.reserve(&both).await.unwrap());
    exceeded(store.reserve(&both).await.unwrap());
    store.rollback(&again).await.unwrap();
    granted(store.reserve(&both).await.unwrap());

    // Rolling back one reservation leaves the others of the same millisecond alone.
    let one = [rolling("c", 60_000, 3.0, 1.0)];
    let first = granted(store.reserve(&one).await.unwrap());
    granted(store.reserve(&one).await.unwrap());
    granted(store.reserve(&one).await.unwrap());
    store.rollback(&first).await.unwrap();
    granted(store.reserve(&one).await.unwrap());
    exceeded(store.reserve(&one).await.unwrap());

    let foreign = Reservation {
        id: "not-ours".into(),
        keys: vec!["c".into()],
    };
    let err = store.rollback(&foreign).await.unwrap_err();
    assert!(err.message.contains("not a reservation"), "{err}");
}

#[tokio::test]
async fn keys_are_prefixed_and_expire_after_their_window() {
    let prefix = unique_prefix();
    let store = store_with_prefix(&prefix).await;
    granted(
        store
            .reserve(&[rolling("ttl", 5_000, 10.0, 1.5)])
            .await
            .unwrap(),
    );
    let mut conn = raw().await;
    let entries = format!("{prefix}{{ttl}}");
    let sum = format!("{entries}:sum");
    for key in [&entries, &sum] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((5_000..=6_000).contains(&ttl), "{key}: {ttl}");
    }
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&entries)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members.len(), 1);
    assert!(members[0].ends_with(":0:1.5"), "{members:?}");
    let total: String = redis::cmd("HGET")
        .arg(&sum)
        .arg("s")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total.parse::<f64>().unwrap(), 1.5);
    assert_eq!(DEFAULT_KEY_PREFIX, "toolgate:counter:");
}

#[tokio::test]
async fn entries_leaving_the_window_leave_the_running_sum() {
    let prefix = unique_prefix();
    let store = store_with_prefix(&prefix).await;
    let small = [rolling("sum", 200, 1.0, 0.3)];
    for _ in 0..3 {
        granted(store.reserve(&small).await.unwrap());
    }
    exceeded(store.reserve(&small).await.unwrap());
    tokio::time::sleep(Duration::from_millis(220)).await;
    // All three left the window: the whole budget is back, and only the new entry is kept.
    granted(
        store
            .reserve(&[rolling("sum", 200, 1.0, 1.0)])
            .await
            .unwrap(),
    );
    let mut conn = raw().await;
    let count: u64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}{{sum}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_lost_running_sum_is_rebuilt_from_the_entries() {
    let prefix = unique_prefix();
    let store = store_with_prefix(&prefix).await;
    let charge = [rolling("heal", 60_000, 3.0, 1.0)];
    granted(store.reserve(&charge).await.unwrap());
    granted(store.reserve(&charge).await.unwrap());
    let mut conn = raw().await;
    let _: u64 = redis::cmd("DEL")
        .arg(format!("{prefix}{{heal}}:sum"))
        .query_async(&mut conn)
        .await
        .unwrap();
    granted(store.reserve(&charge).await.unwrap());
    exceeded(store.reserve(&charge).await.unwrap());
}

#[tokio::test]
async fn one_key_under_two_windows_in_one_call_counts_each_window_exactly() {
    let store = store().await;
    let long = rolling("mixed", 60_000, 10.0, 1.0);
    for _ in 0..3 {
        granted(store.reserve(std::slice::from_ref(&long)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The 200 ms window sees only the first charge of this call; the minute sees all.
    let short = rolling("mixed", 200, 2.0, 1.0);
    granted(store.reserve(&[long, short]).await.unwrap());
    // And the short window dropped nothing the minute still counts: 5 used of 5.
    let five = rolling("mixed", 60_000, 5.0, 1.0);
    exceeded(store.reserve(&[five]).await.unwrap());
}

#[tokio::test]
async fn no_charges_need_no_redis() {
    let store = RedisCounterStore::connect("redis://127.0.0.1:1").unwrap();
    let reservation = granted(store.reserve(&[]).await.unwrap());
    assert!(reservation.keys.is_empty());
    store.rollback(&reservation).await.unwrap();
}

#[tokio::test]
async fn invalid_amounts_are_refused() {
    let store = store().await;
    for (max, amount) in [(1.0, f64::NAN), (f64::INFINITY, 1.0), (1.0, -1.0)] {
        let err = store
            .reserve(&[rolling("bad", 1000, max, amount)])
            .await
            .unwrap_err();
        assert!(err.message.contains("invalid charge"), "{err}");
    }
}

/// 64 tasks × 10 reserves on a budget of 100: exactly 100 are granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_get_exactly_max() {
    let prefix = unique_prefix();
    let store = Arc::new(store_with_prefix(&prefix).await);
    let charges = [
        rolling("shared", 60_000, 100.0, 1.0),
        rolling("roomy", 60_000, 1e6, 1.0),
    ];
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            let charges = charges.clone();
            tokio::spawn(async move {
                let mut grants = 0;
                for _ in 0..10 {
                    if let Reserve::Granted(_) = store.reserve(&charges).await.unwrap() {
                        grants += 1;
                    }
                }
                grants
            })
        })
        .collect();
    let mut grants = 0;
    for task in tasks {
        grants += task.await.unwrap();
    }
    assert_eq!(grants, 100);
    // And the second charge was only taken with the first: 100 entries there too.
    let mut conn = raw().await;
    let roomy: u64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}{{roomy}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(roomy, 100);
}

/// Two stores with their own connections, as two gateways: one budget between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_one_budget_exactly() {
    let prefix = unique_prefix();
    let gateways = [
        Arc::new(store_with_prefix(&prefix).await),
        Arc::new(store_with_prefix(&prefix).await),
    ];
    let charges = [rolling("tenant", 60_000, 100.0, 1.0)];
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = gateways[i % 2].clone();
            let charges = charges.clone();
            tokio::spawn(async move {
                let mut grants = 0;
                for _ in 0..10 {
                    if let Reserve::Granted(_) = store.reserve(&charges).await.unwrap() {
                        grants += 1;
                    }
                }
                (i % 2, grants)
            })
        })
        .collect();
    let mut by_gateway = [0, 0];
    for task in tasks {
        let (gateway, grants) = task.await.unwrap();
        by_gateway[gateway] += grants;
    }
    assert_eq!(by_gateway[0] + by_gateway[1], 100, "{by_gateway:?}");
    // Each gateway also sees the other's consumption.
    for gateway in &gateways {
        exceeded(gateway.reserve(&charges).await.unwrap());
    }
}

/// The script's decisions are those of `window::admit` on the same entries: random
/// multi-charge calls with fractional amounts, replayed against the reference arithmetic.
#[tokio::test]
async fn decisions_match_the_reference_arithmetic() {
    let store = store().await;
    let mut conn = raw().await;
    let keys = ["k0", "k1", "k2"];
    let maxes = [3.0, 5.5, 10.0];
    let window_ms = 600_000;
    let mut entries: Vec<Vec<Entry>> = vec![Vec::new(); keys.len()];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut grants, mut denials) = (0, 0);
    for _ in 0..150 {
        let count = 1 + next(3) as usize;
        let picks: Vec<usize> = (0..count)
            .map(|_| next(keys.len() as u64) as usize)
            .collect();
        let charges: Vec<Charge> = picks
            .iter()
            .map(|&k| {
                let amount = [0.1, 0.25, 0.5, 1.0, 1.3, 2.0][next(6) as usize];
                rolling(keys[k], window_ms, maxes[k], amount)
            })
            .collect();
        let before = server_now_ms(&mut conn).await;
        let answer = store.reserve(&charges).await.unwrap();
        let after = server_now_ms(&mut conn).await;

        // The reference, charge by charge, with this call's earlier charges pending.
        let mut pending: Vec<Vec<Entry>> = vec![Vec::new(); keys.len()];
        let mut expected = None;
        for (i, (&k, charge)) in picks.iter().zip(&charges).enumerate() {
            let mut seen = entries[k].clone();
            seen.extend(&pending[k]);
            if let Err(retry) =
                window::admit(&seen, after, window_ms, false, charge.max, charge.amount)
            {
                expected = Some((i, retry));
                break;
            }
            pending[k].push(Entry {
                at_ms: after,
                amount: charge.amount,
            });
        }
        match (answer, expected) {
            (Reserve::Granted(r), None) => {
                grants += 1;
                let at = granted_at(&r);
                assert!((before..=after).contains(&at));
                for (&k, charge) in picks.iter().zip(&charges) {
                    entries[k].push(Entry {
                        at_ms: at,
                        amount: charge.amount,
                    });
                }
            }
            (
                Reserve::Exceeded {
                    charge,
                    retry_after_ms,
                },
                Some((i, retry)),
            ) => {
                denials += 1;
                assert_eq!(charge, i);
                // Computed at `after` here; the script's clock read lies up to
                // `after - before` earlier, which makes its answer that much longer.
                assert!(
                    retry <= retry_after_ms && retry_after_ms <= retry + (after - before),
                    "{retry_after_ms} vs {retry}"
                );
            }
            (answer, expected) => panic!("store said {answer:?}, reference {expected:?}"),
        }
    }
    assert!(
        grants > 10 && denials > 10,
        "{grants} grants, {denials} denials"
    );
}

/// A private `redis-server` on a spare port, stopped when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the outage tests need `redis-server` on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn cli(&self, args: &[&str]) {
        let status = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(status.success());
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_and_coming_back() {
    let mut server = PrivateRedis::start();
    let store = RedisCounterStore::connect(&server.url()).unwrap();
    let charge = [rolling("outage", 60_000, 100.0, 1.0)];
    granted(store.reserve(&charge).await.unwrap());

    // Redis restarted between two calls: the stale connection is replaced, the call works.
    server.stop();
    server.restart();
    granted(store.reserve(&charge).await.unwrap());

    // Redis down: a clear error, quickly; and so for a rollback.
    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let err = store.reserve(&charge).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        let expected = format!("counter store unavailable: {}: ", server.url());
        assert!(err.message.starts_with(&expected), "{err}");
        println!("while Redis is down: {err} (after {:?})", started.elapsed());
    }
    let lost = Reservation {
        id: "00@1".into(),
        keys: vec!["outage".into()],
    };
    assert!(store.rollback(&lost).await.is_err());

    // Back: the same store works again, from the first call on.
    server.restart();
    granted(store.reserve(&charge).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_while_redis_is_down_works_once_it_is_up() {
    let mut server = PrivateRedis::start();
    server.stop();
    let store = RedisCounterStore::connect(&server.url()).unwrap();
    let charge = [rolling("late", 60_000, 1.0, 1.0)];
    assert!(store.reserve(&charge).await.is_err());
    assert!(store.ping().await.is_err());
    server.restart();
    store.ping().await.unwrap();
    granted(store.reserve(&charge).await.unwrap());
    exceeded(store.reserve(&charge).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_never_hangs_a_call() {
    let server = PrivateRedis::start();
    let store = RedisCounterStore::connect(&server.url())
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let charge = [rolling("hung", 60_000, 100.0, 1.0)];
    granted(store.reserve(&charge).await.unwrap());

    let port = server.port;
    let sleeper = std::thread::spawn(move || {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "debug", "sleep", "0.8"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let err = store.reserve(&charge).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(600), "{took:?}: {err}");
    assert!(err.message.contains("no answer within 300ms"), "{err}");
    println!("while Redis hangs: {err} (after {took:?})");
    assert!(sleeper.join().unwrap().success());
    // Awake again: calls work (on a fresh connection).
    granted(store.reserve(&charge).await.unwrap());
    server.cli(&["ping"]);
}

/// Not an assertion: how long a reserve takes against the test Redis. Run with
/// `cargo test -p toolgate-store --release --test redis_counters -- --nocapture latency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_report() {
    let store = Arc::new(store().await);
    let one = [rolling("lat", 60_000, 1e9, 1.0)];
    for _ in 0..200 {
        store.reserve(&one).await.unwrap();
    }
    let rounds = 3000;
    let started = Instant::now();
    for _ in 0..rounds {
        granted(store.reserve(&one).await.unwrap());
    }
    let sequential = started.elapsed();

    let three = [
        rolling("lat3a", 60_000, 1e9, 1.0),
        rolling("lat3b", 600_000, 1e9, 2.5),
        calendar("lat3c", 60_000, 1e9, 1.0),
    ];
    let started = Instant::now();
    for _ in 0..rounds {
        granted(store.reserve(&three).await.unwrap());
    }
    let three_keys = started.elapsed();

    // A counter holding 1000 live entries: the script sums them on every call.
    let full = [rolling("lat-full", 60_000, 1e9, 1.0)];
    for _ in 0..1000 {
        store.reserve(&full).await.unwrap();
    }
    let started = Instant::now();
    for _ in 0..1000 {
        granted(store.reserve(&full).await.unwrap());
    }
    let full_per = started.elapsed() / 1000;

    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let charges = [rolling(&format!("lat-c{i}"), 60_000, 1e9, 1.0)];
                for _ in 0..100 {
                    store.reserve(&charges).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let concurrent = started.elapsed();

    let mut conn = raw().await;
    let started = Instant::now();
    for _ in 0..rounds {
        let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    }
    let ping = started.elapsed();

    let per = |d: Duration, n: u32| d.as_secs_f64() * 1e6 / f64::from(n);
    println!("redis counter store against {}:", redis_url());
    println!(
        "  PING round trip:               {:7.1} µs",
        per(ping, rounds)
    );
    println!(
        "  reserve, 1 charge:             {:7.1} µs",
        per(sequential, rounds)
    );
    println!(
        "  reserve, 3 charges:            {:7.1} µs",
        per(three_keys, rounds)
    );
    println!(
        "  reserve, 1000 live entries:    {:7.1} µs",
        full_per.as_secs_f64() * 1e6
    );
    println!(
        "  64 concurrent callers:         {:7.0} reserves/s",
        6400.0 / concurrent.as_secs_f64()
    );
}

/// The keys of the private Redis `server` matching `pattern`.
async fn keys_matching(server: &PrivateRedis, pattern: &str) -> Vec<String> {
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn signal(server: &PrivateRedis, sig: &str) {
    let pid = server.child.as_ref().unwrap().id().to_string();
    let status = Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(status.success());
}

/// A reserve queued in a stalled Redis, given up on by the store, never counts: the store
/// voids it in the background once Redis answers again, whichever of the two runs first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_given_up_on_never_counts() {
    let server = PrivateRedis::start();
    let store = RedisCounterStore::connect(&server.url())
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    // Connected, scripts loaded: the next reserve goes straight out as one EVALSHA.
    granted(
        store
            .reserve(&[rolling("warm", 60_000, 1.0, 1.0)])
            .await
            .unwrap(),
    );
    let charge = [rolling("stalled", 60_000, 1.0, 1.0)];

    signal(&server, "-STOP");
    let started = Instant::now();
    let err = store.reserve(&charge).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(600), "{err}");
    assert!(err.message.contains("no answer within 300ms"), "{err}");
    // Redis stays stalled a little longer: the first void attempts fail too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&server, "-CONT");

    let deadline = Instant::now() + Duration::from_secs(10);
    let marks = loop {
        let marks = keys_matching(&server, &format!("{DEFAULT_KEY_PREFIX}void:*")).await;
        if !marks.is_empty() {
            break marks;
        }
        assert!(
            Instant::now() < deadline,
            "the reservation was never voided"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(marks.len(), 1, "{marks:?}");
    let counter = format!("{DEFAULT_KEY_PREFIX}{{stalled}}");
    assert!(
        keys_matching(&server, &format!("{counter}*"))
            .await
            .is_empty(),
        "the given-up reserve left entries"
    );
    // The whole budget is there, once.
    granted(store.reserve(&charge).await.unwrap());
    exceeded(store.reserve(&charge).await.unwrap());
    // And "warm" was not touched by any of it.
    exceeded(
        store
            .reserve(&[rolling("warm", 60_000, 1.0, 1.0)])
            .await
            .unwrap(),
    );
}

/// A void that reaches Redis before the reserve it voids: the reserve consumes nothing and
/// fails; the mark lasts the widest window plus the margin.
#[tokio::test]
async fn a_void_that_lands_first_makes_the_reserve_consume_nothing() {
    let prefix = unique_prefix();
    let store = store_with_prefix(&prefix).await;
    let nonce = format!("{:032x}", 0xfeed_u128);
    let charges = [
        rolling("v1", 60_000, 2.0, 1.0),
        rolling("v1", 60_000, 2.0, 0.5),
        rolling("v2", 1_000, 1.0, 1.0),
    ];
    store.void_now(&nonce, &charges).await.unwrap();
    let err = store
        .reserve_with_nonce(&nonce, &charges)
        .await
        .unwrap_err();
    assert!(err.message.contains("voided"), "{err}");

    let mut conn = raw().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}void:{nonce}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((600_000..=660_000).contains(&ttl), "{ttl}");
    let zcard: u64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}{{v1}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(zcard, 0);
    let full = [
        rolling("v1", 60_000, 2.0, 2.0),
        rolling("v2", 1_000, 1.0, 1.0),
    ];
    granted(store.reserve(&full).await.unwrap());
    exceeded(store.reserve(&full).await.unwrap());
}

/// A void that reaches Redis after the reserve ran takes back exactly that reservation's
/// entries (others stay, the running sums follow), once; a repeat of the reserve is refused.
#[tokio::test]
async fn a_void_after_the_reserve_takes_back_exactly_its_entries() {
    let prefix = unique_prefix();
    let store = store_with_prefix(&prefix).await;
    let other = granted(
        store
            .reserve(&[rolling("w1", 60_000, 3.0, 0.25)])
            .await
            .unwrap(),
    );
    let nonce = format!("{:032x}", 0xbeef_u128);
    let charges = [
        rolling("w1", 60_000, 3.0, 1.0),
        rolling("w1", 60_000, 3.0, 0.5),
        rolling("w2", 60_000, 1.0, 1.0),
    ];
    granted(store.reserve_with_nonce(&nonce, &charges).await.unwrap());
    store.void_now(&nonce, &charges).await.unwrap();
    // Idempotent.
    store.void_now(&nonce, &charges).await.unwrap();

    let mut conn = raw().await;
    let sum: String = redis::cmd("HGET")
        .arg(format!("{prefix}{{w1}}:sum"))
        .arg("s")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(sum.parse::<f64>().unwrap(), 0.25);
    let w2: u64 = redis::cmd("EXISTS")
        .arg(format!("{prefix}{{w2}}"))
        .arg(format!("{prefix}{{w2}}:sum"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(w2, 0, "an emptied counter is removed");

    let err = store
        .reserve_with_nonce(&nonce, &charges)
        .await
        .unwrap_err();
    assert!(err.message.contains("voided"), "{err}");
    granted(
        store
            .reserve(&[
                rolling("w1", 60_000, 3.0, 2.75),
                rolling("w2", 60_000, 1.0, 1.0),
            ])
            .await
            .unwrap(),
    );
    // The other reservation is still there, and still rolls back.
    store.rollback(&other).await.unwrap();
    granted(
        store
            .reserve(&[rolling("w1", 60_000, 3.0, 0.25)])
            .await
            .unwrap(),
    );
}

/// A reserve that never reached Redis (refused connection) leaves nothing to void.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_that_was_never_sent_is_not_voided() {
    let mut server = PrivateRedis::start();
    server.stop();
    let store = RedisCounterStore::connect(&server.url()).unwrap();
    let charge = [rolling("unsent", 60_000, 1.0, 1.0)];
    for _ in 0..3 {
        store.reserve(&charge).await.unwrap_err();
    }
    server.restart();
    granted(store.reserve(&charge).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        keys_matching(&server, &format!("{DEFAULT_KEY_PREFIX}void:*"))
            .await
            .is_empty()
    );
    exceeded(store.reserve(&charge).await.unwrap());
}
