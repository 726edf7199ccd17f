//! The embedded store's counters (SPEC §3.5) through the public `CounterStore` interface,
//! on an injected clock: no test sleeps.

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use toolgate_store::{
    Charge, Clock, CounterStore, EmbeddedStore, Reservation, Reserve, StoreError, StoreFuture,
};

/// A clock the test moves by hand.
#[derive(Debug)]
struct TestClock(AtomicU64);

impl TestClock {
    fn at(ms: u64) -> Arc<TestClock> {
        Arc::new(TestClock(AtomicU64::new(ms)))
    }
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The embedded store's futures finish on their first poll; poll until they do.
fn block_on<T>(mut future: StoreFuture<'_, T>) -> Result<T, StoreError> {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// A fresh directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "toolgate-counters-{tag}-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60_000;
const DAY: u64 = 86_400_000;
/// 2023-11-14T22:13:20Z: a realistic epoch time, not aligned to a minute.
const T0: u64 = 1_700_000_000_000;

fn rolling(key: &str, window_ms: u64, max: f64, amount: f64) -> Charge {
    Charge::rolling(key, window_ms, max, amount)
}

fn calendar(key: &str, window_ms: u64, max: f64, amount: f64) -> Charge {
    Charge::calendar(key, window_ms, max, amount)
}

fn reserve(store: &EmbeddedStore, charges: &[Charge]) -> Reserve {
    block_on(store.reserve(charges)).unwrap()
}

fn granted(store: &EmbeddedStore, charges: &[Charge]) -> Reservation {
    match reserve(store, charges) {
        Reserve::Granted(r) => r,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn exceeded(charge: usize, retry_after_ms: u64) -> Reserve {
    Reserve::Exceeded {
        charge,
        retry_after_ms,
    }
}

fn count_granted(store: &EmbeddedStore, charges: &[Charge], attempts: usize) -> usize {
    (0..attempts)
        .filter(|_| matches!(reserve(store, charges), Reserve::Granted(_)))
        .count()
}

#[test]
fn a_rolling_cap_admits_exactly_max_in_one_millisecond_and_slides() {
    let dir = Scratch::new("rolling");
    let clock = TestClock::at(T0);
    let store = EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap();
    let ten_a_minute = [rolling("grant:ci/rate", MINUTE, 10.0, 1.0)];

    // 5 at T0, 5 at T0 + 10 s; many more attempts at each instant.
    assert_eq!(count_granted(&store, &ten_a_minute, 5), 5);
    clock.advance(10 * SECOND);
    assert_eq!(count_granted(&store, &ten_a_minute, 50), 5);
    // Full: the oldest entries (T0) leave the window at T0 + 60 s, 50 s from now.
    assert_eq!(reserve(&store, &ten_a_minute), exceeded(0, 50 * SECOND));
    clock.set(T0 + MINUTE - 1);
    assert_eq!(reserve(&store, &ten_a_minute), exceeded(0, 1));
    // The window slides: T0's five are out, T0 + 10 s's five still in.
    clock.set(T0 + MINUTE);
    assert_eq!(count_granted(&store, &ten_a_minute, 50), 5);
    assert_eq!(reserve(&store, &ten_a_minute), exceeded(0, 10 * SECOND));
    clock.set(T0 + 10 * SECOND + MINUTE);
    assert_eq!(count_granted(&store, &ten_a_minute, 50), 5);
    // Within any trailing minute there were never more than 10.
    assert_eq!(reserve(&store, &ten_a_minute), exceeded(0, 50 * SECOND));
}

#[test]
fn a_calendar_window_resets_on_the_utc_boundary() {
    let dir = Scratch::new("calendar");
    let minute_start = T0 - T0 % MINUTE;
    let clock = TestClock::at(minute_start + 59 * SECOND);
    let store = EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap();
    let two_a_minute = [calendar("c", MINUTE, 2.0, 1.0)];
    assert_eq!(count_granted(&store, &two_a_minute, 10), 2);
    assert_eq!(reserve(&store, &two_a_minute), exceeded(0, SECOND));
    clock.set(minute_start + MINUTE - 1);
    assert_eq!(reserve(&store, &two_a_minute), exceeded(0, 1));
    // :00 — a fresh minute, even though the last two are 1 s old.
    clock.set(minute_start + MINUTE);
    assert_eq!(count_granted(&store, &two_a_minute, 10), 2);
    assert_eq!(reserve(&store, &two_a_minute), exceeded(0, MINUTE));

    // A day resets at UTC midnight.
    let midnight = T0 - T0 % DAY + DAY;
    clock.set(midnight - 1);
    let daily = [calendar("d", DAY, 1.0, 1.0)];
    granted(&store, &daily);
    assert_eq!(reserve(&store, &daily), exceeded(0, 1));
    clock.set(midnight);
    granted(&store, &daily);
}

#[test]
fn several_charges_are_all_or_nothing() {
    let dir = Scratch::new("atomic");
    let store = EmbeddedStore::open_with_clock(dir.path(), TestClock::at(T0)).unwrap();
    let tool = rolling("tool", MINUTE, 5.0, 1.0);
    let global = rolling("global", MINUTE, 1.0, 1.0);
    granted(&store, std::slice::from_ref(&global));
    // The second charge does not fit: the first is not consumed either.
    for _ in 0..20 {
        assert_eq!(
            reserve(&store, &[tool.clone(), global.clone()]),
            exceeded(1, MINUTE)
        );
    }
    assert_eq!(count_granted(&store, std::slice::from_ref(&tool), 20), 5);
    // The first charge that does not fit is the one named.
    assert_eq!(
        reserve(&store, &[global.clone(), tool.clone()]),
        exceeded(0, MINUTE)
    );
}

#[test]
fn charges_on_one_key_in_one_call_share_its_budget() {
    let dir = Scratch::new("shared");
    let store = EmbeddedStore::open_with_clock(dir.path(), TestClock::at(T0)).unwrap();
    // Two tools' limits naming one counter: one budget of 3.
    let a = rolling("shared", MINUTE, 3.0, 2.0);
    let b = rolling("shared", MINUTE, 3.0, 2.0);
    assert_eq!(
        reserve(&store, &[a.clone(), b.clone()]),
        exceeded(1, MINUTE)
    );
    // Nothing was consumed: 3 still fits.
    let r = granted(&store, &[rolling("shared", MINUTE, 3.0, 1.0), a.clone()]);
    assert_eq!(r.keys, vec!["shared".to_string(), "shared".to_string()]);
    assert_eq!(
        reserve(&store, &[rolling("shared", MINUTE, 3.0, 1.0)]),
        exceeded(0, MINUTE)
    );
}

#[test]
fn increments_and_fractional_amounts_add_up() {
    let dir = Scratch::new("amounts");
    let clock = TestClock::at(T0);
    let store = EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap();
    // Ten charges of 0.1 fit a max of 1, despite binary rounding; the eleventh does not.
    let dime = [rolling("fractions", MINUTE, 1.0, 0.1)];
    assert_eq!(count_granted(&store, &dime, 10), 10);
    assert_eq!(reserve(&store, &dime), exceeded(0, MINUTE));

    // A spend cap: 10000 a day, summed from the calls' amounts.
    let spend = |amount: f64| [rolling("spend", DAY, 10_000.0, amount)];
    granted(&store, &spend(2_500.0));
    clock.advance(SECOND);
    granted(&store, &spend(7_000.0));
    clock.advance(SECOND);
    // 600 more would make 10100: it must wait for the first charge (2500) to leave.
    assert_eq!(
        reserve(&store, &spend(600.0)),
        exceeded(0, DAY - 2 * SECOND)
    );
    granted(&store, &spend(500.0));
    assert_eq!(reserve(&store, &spend(0.5)), exceeded(0, DAY - 2 * SECOND));
    // More than max never fits; the answer is a whole window.
    assert_eq!(reserve(&store, &spend(10_001.0)), exceeded(0, DAY));
}

#[test]
fn rollback_gives_the_budget_back_and_is_idempotent() {
    let dir = Scratch::new("rollback");
    let store = EmbeddedStore::open_with_clock(dir.path(), TestClock::at(T0)).unwrap();
    let tool = rolling("tool", MINUTE, 2.0, 1.0);
    let global = rolling("global", MINUTE, 2.0, 1.0);
    let both = [tool.clone(), global.clone()];
    let first = granted(&store, &both);
    granted(&store, &both);
    assert_eq!(reserve(&store, &both), exceeded(0, MINUTE));
    // Giving back a two-key reservation frees both keys.
    block_on(store.rollback(&first)).unwrap();
    block_on(store.rollback(&first)).unwrap();
    granted(&store, &both);
    assert_eq!(reserve(&store, &both), exceeded(0, MINUTE));
    // Rolling back something unknown is harmless.
    let unknown = Reservation {
        id: "no-such-reservation".into(),
        keys: vec!["tool".into()],
    };
    block_on(store.rollback(&unknown)).unwrap();
    assert_eq!(reserve(&store, &both), exceeded(0, MINUTE));
}

#[test]
fn consumption_survives_reopening_the_store() {
    let dir = Scratch::new("persist");
    let clock = TestClock::at(T0);
    let three = [rolling("p", MINUTE, 3.0, 1.0)];
    {
        let store = EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap();
        assert_eq!(count_granted(&store, &three, 2), 2);
    }
    clock.advance(SECOND);
    let store = EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap();
    assert_eq!(count_granted(&store, &three, 10), 1);
    assert_eq!(reserve(&store, &three), exceeded(0, MINUTE - SECOND));
    drop(store);
    // And a restart with the plain constructor (system clock) does not reset the budget.
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let long = [rolling("p", now - T0 + DAY, 3.0, 1.0)];
    assert!(matches!(reserve(&store, &long), Reserve::Exceeded { .. }));
}

/// Runs `threads` threads of `calls` reserve calls each on `stores` (round robin).
fn hammer(stores: &[Arc<EmbeddedStore>], threads: usize, calls: usize, charge: &Charge) -> usize {
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let charge = charge.clone();
            std::thread::spawn(move || count_granted(&store, std::slice::from_ref(&charge), calls))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn concurrent_callers_get_exactly_max() {
    let dir = Scratch::new("threads");
    let store = Arc::new(EmbeddedStore::open_with_clock(dir.path(), TestClock::at(T0)).unwrap());
    let charge = rolling("hot", MINUTE, 100.0, 1.0);
    assert_eq!(hammer(&[store], 8, 50, &charge), 100);
}

#[test]
fn two_stores_on_one_directory_share_one_budget_exactly() {
    let dir = Scratch::new("two-stores");
    let clock = TestClock::at(T0);
    let a = Arc::new(EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap());
    let b = Arc::new(EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap());
    let charge = rolling("hot", MINUTE, 100.0, 1.0);
    assert_eq!(hammer(&[a.clone(), b.clone()], 8, 50, &charge), 100);
    assert_eq!(
        reserve(&a, std::slice::from_ref(&charge)),
        exceeded(0, MINUTE)
    );
    assert_eq!(
        reserve(&b, std::slice::from_ref(&charge)),
        exceeded(0, MINUTE)
    );
}

/// Set in the children of [`two_processes_share_one_budget_exactly`]: the data directory.
const CHILD_DIR: &str = "TOOLGATE_TEST_COUNTER_CHILD_DIR";

/// Polls (briefly sleeping) until `path` exists: a start barrier, not a timing assumption.
fn wait_for(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed().as_secs() < 60,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn two_processes_share_one_budget_exactly() {
    let charge = rolling("cross-process", DAY, 200.0, 1.0);
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        // Child: a whole gateway's worth of store, on the system clock. Opens, says it is
        // ready, and starts when the parent says go, so that both children overlap.
        let dir = PathBuf::from(dir);
        let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
        std::fs::write(dir.join(format!("ready-{}", std::process::id())), b"").unwrap();
        wait_for(&dir.join("go"));
        let n = hammer(&[store], 4, 50, &charge);
        println!("granted={n}");
        return;
    }
    // The children create the data directory and the database themselves, at once, as two
    // gateways started together would.
    let dir = Scratch::new("processes");
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "two_processes_share_one_budget_exactly",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut children = children;
    let started = Instant::now();
    for child in &mut children {
        let ready = dir.path().join(format!("ready-{}", child.id()));
        while !ready.exists() {
            if child.try_wait().unwrap().is_some() {
                break; // It failed to open the store: its output says why, below.
            }
            assert!(started.elapsed().as_secs() < 60, "a child never got ready");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    std::fs::write(dir.path().join("go"), b"").unwrap();
    let total: usize = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
            // libtest prints "test … " before the test's own output, on the same line.
            let (_, count) = stdout
                .split_once("granted=")
                .unwrap_or_else(|| panic!("no count in child output: {stdout}"));
            let digits: String = count.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().unwrap()
        })
        .sum();
    // 2 processes × 4 threads × 50 calls = 400 attempts on a max of 200.
    assert_eq!(total, 200);
}

/// Prints the cost of a reserve call; a report, not a timed assertion. Release numbers:
/// `cargo test --release -p toolgate-store --test embedded_counters -- --nocapture timing`
#[test]
fn reserve_timing_report() {
    fn report(what: &str, mut micros: Vec<f64>) {
        micros.sort_by(f64::total_cmp);
        let mean = micros.iter().sum::<f64>() / micros.len() as f64;
        println!(
            "reserve timing: {what}: median {:.1} µs, p99 {:.1} µs, mean {mean:.1} µs ({} calls)",
            micros[micros.len() / 2],
            micros[micros.len() * 99 / 100],
            micros.len()
        );
    }
    fn time(
        store: &EmbeddedStore,
        clock: &TestClock,
        step_ms: u64,
        charges: &[Charge],
    ) -> Vec<f64> {
        (0..CALLS)
            .map(|_| {
                clock.advance(step_ms);
                let started = Instant::now();
                let _ = reserve(store, charges);
                started.elapsed().as_secs_f64() * 1e6
            })
            .collect()
    }
    // Short in debug builds, where this runs with the rest of the suite.
    const CALLS: usize = if cfg!(debug_assertions) { 300 } else { 3_000 };
    let dir = Scratch::new("timing");
    let clock = TestClock::at(T0);
    let store = EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap();
    // Steady state: 10 a second, one call every 100 ms: each fits, ~10 live entries,
    // one expires per call.
    let light = rolling("light", SECOND, 10.0, 1.0);
    time(&store, &clock, 100, std::slice::from_ref(&light)); // warm up
    report(
        "granted, one charge, ~10 live entries",
        time(&store, &clock, 100, std::slice::from_ref(&light)),
    );
    // The same at 100 a second, one call every 10 ms: ~100 live entries.
    let busy = rolling("busy", SECOND, 100.0, 1.0);
    report(
        "granted, one charge, ~100 live entries",
        time(&store, &clock, 10, std::slice::from_ref(&busy)),
    );
    let global = rolling("global", SECOND, 1e9, 1.0);
    report(
        "granted, two charges",
        time(&store, &clock, 10, &[busy.clone(), global]),
    );
    // A spend cap with many live entries: the decision sums them all.
    let big: &[u64] = if cfg!(debug_assertions) {
        &[1_000]
    } else {
        &[1_000, 10_000]
    };
    for &live in big {
        let key = format!("spend-{live}");
        let spend = rolling(&key, DAY, 1e12, 1.0);
        for _ in 0..live {
            clock.advance(1);
            reserve(&store, std::slice::from_ref(&spend));
        }
        report(
            &format!("granted, one charge, ~{live} live entries"),
            time(&store, &clock, 1, std::slice::from_ref(&spend)),
        );
    }
    // Refused: the cap is reached and the clock stands still; the 100 entries are loaded to
    // compute retry_after_ms.
    let capped = rolling("capped", MINUTE, 100.0, 1.0);
    count_granted(&store, std::slice::from_ref(&capped), 100);
    report(
        "refused, 100 live entries",
        time(&store, &clock, 0, std::slice::from_ref(&capped)),
    );
}

/// One step of a property test: a call with its charges (key index, amount) after the
/// clock advances, or the rollback of an earlier grant (picked modulo their number).
#[derive(Debug, Clone)]
enum Op {
    Call {
        advance: u64,
        charges: Vec<(usize, f64)>,
    },
    Rollback(usize),
}

/// What [`window::admit`](toolgate_store::counters::window::admit) forgives.
const EPSILON: f64 = 1e-9;

/// The reference: every grant, and what counts when, straight from SPEC §3.5.
struct Model {
    calendar: bool,
    /// Per key: (window, max).
    keys: Vec<(u64, f64)>,
    grants: Vec<Grant>,
}

/// A granted call, as the model remembers it.
struct Grant {
    at_ms: u64,
    charges: Vec<(usize, f64)>,
    reservation: Reservation,
    /// Not rolled back.
    live: bool,
}

impl Model {
    /// Whether an entry made at `t` counts at `at` on key `key`.
    fn counts(&self, key: usize, t: u64, at: u64) -> bool {
        let window = self.keys[key].0;
        if self.calendar {
            t / window == at / window && t <= at
        } else {
            t + window > at && t <= at
        }
    }
    /// What key `key` holds at `at`.
    fn used(&self, key: usize, at: u64) -> f64 {
        self.grants
            .iter()
            .filter(|g| g.live && self.counts(key, g.at_ms, at))
            .flat_map(|g| g.charges.iter())
            .filter(|(k, _)| *k == key)
            .map(|(_, a)| a)
            .sum()
    }
    /// Whether charge `j` of a call at `now` would fit at `at` (no other calls meanwhile),
    /// counting the call's earlier charges on the same key as made at `now`.
    fn fits(&self, charges: &[(usize, f64)], j: usize, now: u64, at: u64) -> bool {
        let (key, amount) = charges[j];
        let pending: f64 = charges[..j]
            .iter()
            .filter(|(k, _)| *k == key && self.counts(key, now, at))
            .map(|(_, a)| a)
            .sum();
        self.used(key, at) + pending + amount <= self.keys[key].1 + EPSILON
    }
}

/// Runs `ops` against a fresh store and the model; every decision must be the model's.
fn check(calendar: bool, keys: Vec<(u64, f64)>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = Scratch::new("prop");
    let clock = TestClock::at(T0);
    // Two stores on one directory, as two gateway processes would be: every third step goes
    // through the second, so each sees the other's writes (and must not trust what it
    // remembers of the counters).
    let stores = [
        EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap(),
        EmbeddedStore::open_with_clock(dir.path(), clock.clone()).unwrap(),
    ];
    let mut model = Model {
        calendar,
        keys,
        grants: Vec::new(),
    };
    for (step, op) in ops.into_iter().enumerate() {
        let store = &stores[usize::from(step % 3 == 2)];
        let (advance, charges) = match op {
            Op::Call { advance, charges } => (advance, charges),
            Op::Rollback(pick) => {
                if !model.grants.is_empty() {
                    let index = pick % model.grants.len();
                    block_on(store.rollback(&model.grants[index].reservation)).unwrap();
                    model.grants[index].live = false;
                }
                continue;
            }
        };
        clock.advance(advance);
        let now = clock.now_ms();
        let request: Vec<Charge> = charges
            .iter()
            .map(|&(key, amount)| {
                let (window, max) = model.keys[key];
                let charge = rolling(&format!("k{key}"), window, max, amount);
                Charge { calendar, ..charge }
            })
            .collect();
        let expected = (0..charges.len()).find(|&j| !model.fits(&charges, j, now, now));
        match (reserve(store, &request), expected) {
            (Reserve::Granted(reservation), None) => {
                model.grants.push(Grant {
                    at_ms: now,
                    charges: charges.clone(),
                    reservation,
                    live: true,
                });
                // So no window ever holds more than max: the one ending now holds the most
                // it ever will; those ending earlier were checked at their last grant.
                for (key, &(_, max)) in model.keys.iter().enumerate() {
                    prop_assert!(model.used(key, now) <= max + EPSILON);
                }
            }
            (
                Reserve::Exceeded {
                    charge,
                    retry_after_ms,
                },
                Some(j),
            ) => {
                prop_assert_eq!(charge, j, "refused on the wrong charge");
                let (window, max) = model.keys[charges[j].0];
                if calendar {
                    prop_assert_eq!(retry_after_ms, window - now % window);
                } else if charges[j].1 > max + EPSILON {
                    prop_assert_eq!(retry_after_ms, window);
                } else {
                    // Exact: it fits then, and not a millisecond earlier.
                    prop_assert!(retry_after_ms >= 1);
                    prop_assert!(
                        model.fits(&charges, j, now, now + retry_after_ms),
                        "retry_after_ms {} is too soon",
                        retry_after_ms
                    );
                    prop_assert!(
                        !model.fits(&charges, j, now, now + retry_after_ms - 1),
                        "retry_after_ms {} is later than needed",
                        retry_after_ms
                    );
                }
            }
            (got, expected) => {
                prop_assert!(
                    false,
                    "at {} ms {:?}: got {:?}, the model says {}",
                    now - T0,
                    charges,
                    got,
                    match expected {
                        None => "granted".to_string(),
                        Some(j) => format!("charge {j} exceeded"),
                    }
                );
            }
        }
    }
    Ok(())
}

fn amount() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(0.1),
        (1..=24u32).prop_map(|quarters| f64::from(quarters) / 4.0),
    ]
}

fn max() -> impl Strategy<Value = f64> {
    prop_oneof![Just(1.0), Just(2.5), Just(5.0), Just(10.0)]
}

/// Mostly small steps; now and then a jump past every window and the store's minute sweep.
fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0..1_500u64, 1 => 0..70_000u64]
}

/// Calls of 1 to `most` charges on keys below `keys`, and rollbacks.
fn ops(keys: usize, most: usize) -> impl Strategy<Value = Vec<Op>> {
    let call = (
        advance(),
        prop::collection::vec((0..keys, amount()), 1..=most),
    )
        .prop_map(|(advance, charges)| Op::Call { advance, charges });
    let op = prop_oneof![5 => call, 1 => any::<usize>().prop_map(Op::Rollback)];
    prop::collection::vec(op, 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// One rolling counter, random (time advance, amount) requests and rollbacks: every
    /// grant and refusal is the model's — so no trailing window ever holds more than max,
    /// a refusal happens only when the amount really would not fit — and retry_after_ms
    /// is the exact first moment it would.
    #[test]
    fn a_rolling_counter_decides_exactly_as_the_model(
        window in 1..5_000u64, max in max(), ops in ops(1, 1),
    ) {
        check(false, vec![(window, max)], ops)?;
    }

    /// The same for calendar windows: no aligned window holds more than max, and
    /// retry_after_ms points at the next boundary.
    #[test]
    fn a_calendar_counter_decides_exactly_as_the_model(
        window in 1..5_000u64, max in max(), ops in ops(1, 1),
    ) {
        check(true, vec![(window, max)], ops)?;
    }

    /// Calls of up to three charges on two rolling counters (sometimes the same one
    /// twice): all or nothing, the first charge that does not fit is the one named.
    #[test]
    fn several_charges_decide_exactly_as_the_model(
        a in (1..5_000u64, max()), b in (1..5_000u64, max()), ops in ops(2, 3),
    ) {
        check(false, vec![a, b], ops)?;
    }
}
