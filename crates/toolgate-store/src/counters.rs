//! Counters: quotas that hold exactly (SPEC §3.5).
//!
//! A call's charges are checked and reserved together, atomically: all are consumed or
//! none is. A reservation is consumption — it counts from the moment it is granted, so
//! concurrent calls can never jointly overshoot — and it is rolled back when the call
//! never ran. There is no separate commit: a call that ran simply keeps its reservation.
//!
//! The arithmetic of windows is pure and lives in [`window`]; each store only keeps the
//! entries and runs that arithmetic atomically on its own clock.

pub mod window;

use crate::StoreError;
use std::future::Future;
use std::pin::Pin;

/// The future a store operation returns (boxed, so stores can sit behind `dyn`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One quota a call consumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// The counter's full key: counter name plus scope and scope value, built by the caller
    /// (the store treats it as opaque). Charges with the same key share one budget.
    pub key: String,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Calendar-aligned UTC windows instead of a rolling window.
    pub calendar: bool,
    /// The most that may be consumed within one window.
    pub max: f64,
    /// What this call consumes (positive).
    pub amount: f64,
}

impl Charge {
    /// A charge on a strict rolling window.
    pub fn rolling(key: impl Into<String>, window_ms: u64, max: f64, amount: f64) -> Charge {
        Charge {
            key: key.into(),
            window_ms,
            calendar: false,
            max,
            amount,
        }
    }

    /// A charge on a calendar-aligned (UTC) window.
    pub fn calendar(key: impl Into<String>, window_ms: u64, max: f64, amount: f64) -> Charge {
        Charge {
            calendar: true,
            ..Charge::rolling(key, window_ms, max, amount)
        }
    }
}

/// Proof of a granted reservation, enough to roll it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Unique id of this reservation.
    pub id: String,
    /// The counter keys it consumed from, in charge order.
    pub keys: Vec<String>,
}

/// The answer to a reservation request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reserve {
    /// Every charge fit; all were consumed.
    Granted(Reservation),
    /// Charge number `charge` did not fit; nothing was consumed.
    Exceeded {
        /// Index into the charges of the one that did not fit (the first such).
        charge: usize,
        /// When retrying can first succeed, in milliseconds from now.
        retry_after_ms: u64,
    },
}

/// Where counters live.
pub trait CounterStore: Send + Sync {
    /// Checks every charge and, if all fit, consumes them all; atomic across charges and
    /// across every gateway sharing the store.
    fn reserve<'a>(&'a self, charges: &'a [Charge]) -> StoreFuture<'a, Reserve>;

    /// Gives a reservation back (the call never ran). Complete when the future resolves.
    fn rollback<'a>(&'a self, reservation: &'a Reservation) -> StoreFuture<'a, ()>;
}

/// A source of "now" in milliseconds since the Unix epoch; injected in tests.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
