//! Slowing down repeated authentication failures from one address.
//!
//! Tokens are 256-bit random values, so guessing one is hopeless; what an address that
//! keeps failing costs is log volume and work, and it may be probing for a leaked or
//! mistyped token. After a few free failures, each further failure from the same address is
//! answered late, the delay doubling up to a cap; a minute without failures forgets it.
//! Successes are never delayed and do not reset the count: an attacker behind the same NAT
//! as a working agent must not be able to lean on the agent's successes.
//!
//! IPv6 addresses count per /64 (one host usually has a whole /64 to pick from).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures answered at once before the slowdown starts.
const FREE_FAILURES: u32 = 5;
/// The first delay; each further failure doubles it.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(4);
/// An address with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Addresses tracked at most (memory stays bounded whatever the traffic).
const MAX_TRACKED: usize = 10_000;

/// Failure counts per address.
#[derive(Debug, Default)]
pub(crate) struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// One address's recent failures.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl AuthThrottle {
    /// Counts a failed authentication from `ip` at `now`; returns how long to wait before
    /// answering it.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) -> Duration {
        let key = key(ip);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&key) {
            failures.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if failures.len() >= MAX_TRACKED {
                // Under a flood from many addresses, a new one is slowed down at once.
                return MAX_DELAY;
            }
        }
        let entry = failures.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        delay_after(entry.count)
    }
}

impl AuthThrottle {
    /// Counts a failed authentication from `peer` now and waits as long as that earns it
    /// (an async sleep: a slowed client holds a connection, not a thread).
    pub(crate) async fn failed_now(&self, peer: IpAddr) {
        let delay = self.failed(peer, Instant::now());
        if !delay.is_zero() {
            tracing::info!(%peer, delay_ms = delay.as_millis() as u64, "repeated authentication failures: answering late");
            tokio::time::sleep(delay).await;
        }
    }
}

/// The delay for the `count`th failure in a row.
fn delay_after(count: u32) -> Duration {
    match count.checked_sub(FREE_FAILURES + 1) {
        None => Duration::ZERO,
        Some(doublings) => FIRST_DELAY
            .checked_mul(1u32 << doublings.min(16))
            .map_or(MAX_DELAY, |d| d.min(MAX_DELAY)),
    }
}

/// The address as counted: IPv4 (also when mapped into IPv6), or an IPv6 /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_free_then_slowed_down_doubling_to_a_cap_and_forgotten() {
        let throttle = AuthThrottle::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let start = Instant::now();
        let delays: Vec<Duration> = (0..12).map(|_| throttle.failed(ip, start)).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 0, 0, 0, 250, 500, 1000, 2000, 4000, 4000, 4000]);
        // Another address is not affected.
        assert_eq!(
            throttle.failed("192.0.2.8".parse().unwrap(), start),
            Duration::ZERO
        );
        // A minute without failures forgets.
        assert_eq!(throttle.failed(ip, start + FORGET_AFTER), Duration::ZERO);
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64_and_mapped_ipv4_as_ipv4() {
        let throttle = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..FREE_FAILURES {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            assert_eq!(throttle.failed(ip, now), Duration::ZERO);
        }
        let next: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(throttle.failed(next, now), FIRST_DELAY);
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let throttle = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            throttle.failed(IpAddr::V4(i.into()), now);
        }
        let newcomer = IpAddr::V4(u32::MAX.into());
        assert_eq!(throttle.failed(newcomer, now), MAX_DELAY);
        assert_eq!(throttle.failures.lock().unwrap().len(), MAX_TRACKED);
        // Once the old entries are stale they make room.
        assert_eq!(
            throttle.failed(newcomer, now + FORGET_AFTER),
            Duration::ZERO
        );
    }
}
