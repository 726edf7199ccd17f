//! Counters in Redis: the cluster counter store (SPEC §8).
//!
//! Any number of gateways share one Redis; a limit holds across all of them together,
//! exactly, because every reservation is **one Lua script call** and Redis runs scripts
//! atomically, one at a time, on its own clock (`TIME`). No gateway's clock matters.
//!
//! # Data layout
//!
//! A counter key `K` (opaque, from the caller) lives in two Redis keys under a prefix
//! ([`DEFAULT_KEY_PREFIX`] unless changed with [`RedisCounterStore::with_key_prefix`]):
//!
//! - `<prefix>{K}` — a sorted set, one member per granted charge:
//!   `<nonce>:<charge index>:<amount>`, scored with the Redis server time of the grant (ms
//!   since the epoch). The nonce is 32 random hex digits, unique per reservation; the index
//!   keeps two charges of one call on the same key apart; the amount is Rust's shortest
//!   round-trip spelling of the `f64`, so the script reads back exact values.
//! - `<prefix>{K}:sum` — a hash holding the running sum of the set's amounts (`s` plus the
//!   compensation `c` of Neumaier's summation, so it does not drift).
//!
//! Both names are injective in `K` and never equal each other (one ends in `}`, the other in
//! `:sum`), whatever `K` contains. A third kind of key, `<prefix>void:<nonce>`, marks a
//! reservation attempt the store gave up on (see *Failures*); it cannot equal a counter's
//! keys, which always have `{` right after the prefix. The braces also put both keys of one
//! counter in one Redis Cluster hash slot, but Redis Cluster is not supported: one script
//! touches all the counters of a call (and its void mark), which Redis Cluster only allows
//! within a single slot. Use a single primary (with replicas and Sentinel for failover).
//!
//! The [`Reservation`] id is `<nonce>@<at_ms>`; with the keys it carries, that finds every
//! member again: rollback reads the members scored exactly `at_ms` on each key (normally a
//! handful), removes those starting with `<nonce>:` and subtracts their amounts from the
//! sum. O(log n) per key, one script call, idempotent.
//!
//! # The reserve script
//!
//! One `EVALSHA` per call (the script is loaded on `NOSCRIPT`). It first looks for the
//! attempt's void mark (see *Failures*): if there is one, it consumes nothing and answers
//! `{2}`, which the store reports as an error. With `now` from Redis'
//! `TIME`, for each key the call touches it first drops the entries that none of the call's
//! charges on that key counts any more — rolling: scored before `now + 1 - window`;
//! calendar: before `floor(now / window) * window` — subtracting them from the running sum
//! (each entry is dropped once: amortised O(1)). The sum is then exactly what counts, so the
//! decision costs O(log n), not O(entries). Then, for each charge in order, it applies
//! exactly the rule and the `retry_after` arithmetic of
//! [`window::admit`](crate::counters::window::admit) (including its 1e-9 forgiveness for
//! fractional sums), counting what earlier charges of the same call put on the same key. An
//! entry stamped after `now` (the Redis clock went back) counts as if made now, as in the
//! embedded store: that errs towards refusing. On a refusal `retry_after` reads the oldest
//! entries until enough would have left the window (normally one).
//!
//! The first charge that does not fit ends the script, `{0, charge index, retry_after_ms}`:
//! nothing is consumed (only dead entries were dropped). Otherwise it adds every member,
//! updates the sums, sets both keys to expire `widest window + 1 s` after `now` (by then no
//! entry can count) and answers `{1, now}`.
//!
//! Dropping follows the windows of the call at hand, like the embedded store's expiry: a
//! counter whose window a policy reload lengthens counts what is left of its consumption,
//! the entries made within the old window. (One counter name with two windows is a policy
//! validation error; the store still stays exact when one call charges a key under two
//! windows.)
//!
//! # Failures
//!
//! Every operation has a deadline ([`DEFAULT_TIMEOUT`], see
//! [`RedisCounterStore::with_timeout`]): connecting, waiting and the script call together.
//! Any failure is a [`StoreError`] reading `counter store unavailable: <redis url without
//! credentials>: <cause>`, so the caller fails closed (or open, if configured) at once.
//!
//! The connection is made lazily and remade after any failure that may have broken it
//! (I/O error, closed connection, deadline passed): a gateway recovers by itself when Redis
//! comes back, on the next call, without being restarted. When a call finds its connection
//! broken, it retries once on a fresh connection within the same deadline. That retry is
//! safe for reserve too: the script first looks for the reservation's own first member, so
//! a call whose first attempt was granted but whose answer was lost gets that same grant
//! back instead of a second one.
//!
//! # Given-up reservations never count
//!
//! Only a call the store admitted consumes quota. When a reserve fails in a way that leaves
//! it unknown whether the script ran or will still run — its deadline passed (e.g. Redis is
//! stalled with the `EVALSHA` queued), the connection broke after sending, the answer was
//! unreadable — the caller gets its error at once and the store **voids** the attempt in
//! the background: one script that sets the attempt's void mark `<prefix>void:<nonce>`
//! (expiring after the widest window of the call plus [`VOID_MARGIN`]) and removes the
//! attempt's members (known exactly: `<nonce>:<index>:<amount>`) from its counters, fixing
//! the running sums. Both orders end with nothing counted: a reserve that ran first is
//! undone; a reserve that runs after the void finds the mark and consumes nothing. The two
//! may reach Redis on different connections. The void is retried with back-off (from
//! [`VOID_FIRST_RETRY`] doubling up to [`VOID_MAX_RETRY`]) until it succeeds or the widest
//! window plus [`VOID_MARGIN`] has passed since the failure; a failure where Redis answered
//! with an error (the script did not grant) needs no void. What remains: a Redis stalled for
//! longer than that bound with a reserve queued still counts it once it resumes, and a
//! reserve that reaches Redis more than [`VOID_MARGIN`] after its void (beyond the widest
//! window) is counted — both on the safe side: never more than `max`.
//!
//! Counters live as long as Redis keeps them: run Redis with persistence (AOF or RDB) for
//! counters that survive a Redis restart.

use crate::counters::{Charge, CounterStore, Reservation, Reserve, StoreFuture};
use crate::StoreError;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, RedisResult, Script};
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The prefix put before every counter key in Redis, unless configured otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "toolgate:counter:";

/// How long one store operation may take, connecting included, before it fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long past the widest window of a given-up reservation its void mark is kept, and
/// how long past that window the store keeps trying to void it while Redis is unreachable.
pub const VOID_MARGIN: Duration = Duration::from_secs(600);

/// The first pause between two attempts to void a given-up reservation; it doubles after
/// each failed attempt, up to [`VOID_MAX_RETRY`].
pub const VOID_FIRST_RETRY: Duration = Duration::from_millis(100);

/// The longest pause between two attempts to void a given-up reservation.
pub const VOID_MAX_RETRY: Duration = Duration::from_secs(2);

/// Void marks never live longer than this (about ten years), whatever the window: Redis
/// refuses expiry times beyond its range.
const MAX_VOID_MARK_MS: u64 = 10 * 366 * 24 * 3600 * 1000;

/// Lua shared by the scripts: amounts, the compensated running sum, and its storage.
///
/// Lua numbers are doubles; every time here is far below 2^53, so time arithmetic is exact.
/// The running sum is kept with Neumaier's compensated summation (a sum `s` and its lost
/// low-order part `c`), so millions of additions and removals do not drift it: its error
/// stays within a few ulps of the exact sum, far inside the 1e-9 forgiveness.
const COMMON_LUA: &str = r#"
local function num(x) return string.format('%.0f', x) end
local function amount_of(m) return tonumber(string.match(m, ':([^:]*)$')) end
local function add(acc, x)
  local t = acc[1] + x
  if math.abs(acc[1]) >= math.abs(x) then
    acc[2] = acc[2] + ((acc[1] - t) + x)
  else
    acc[2] = acc[2] + ((x - t) + acc[1])
  end
  acc[1] = t
end
-- The running sum of everything in the entries set z, kept in the hash s.
local function load_sum(z, s)
  if redis.call('ZCARD', z) == 0 then return {0, 0} end
  local v = redis.call('HMGET', s, 's', 'c')
  if v[1] then return {tonumber(v[1]), tonumber(v[2]) or 0} end
  -- The sum is only a cache of the entries: rebuild it if it went missing.
  local acc = {0, 0}
  for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do add(acc, amount_of(m)) end
  return acc
end
local function store_sum(z, s, acc)
  if redis.call('ZCARD', z) == 0 then
    redis.call('DEL', z, s)
    return
  end
  redis.call('HSET', s, 's', string.format('%.17g', acc[1]), 'c', string.format('%.17g', acc[2]))
  if redis.call('PTTL', s) < 0 then
    local ttl = redis.call('PTTL', z)
    if ttl > 0 then redis.call('PEXPIRE', s, ttl) end
  end
end
"#;

/// The reservation script; see the module documentation. KEYS: for charge i, its entries
/// set at 2i-1 and its sum hash at 2i, then (last) the attempt's void mark. ARGV: the nonce,
/// then for charge i the window (ms), calendar (`1`/`0`), max and amount at 4i-2 … 4i+1.
const RESERVE_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local EPSILON = 1e-9
local SLACK_MS = 1000
local nonce = ARGV[1]
local n = (#KEYS - 1) / 2

-- An attempt the store gave up on (and voided) never consumes anything.
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return {2} end
local function arg(i, k) return ARGV[1 + 4 * (i - 1) + k] end
local function member(i) return nonce .. ':' .. (i - 1) .. ':' .. arg(i, 4) end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A retry of a call whose first attempt was granted (its answer lost) gets that grant.
local earlier = redis.call('ZSCORE', KEYS[1], member(1))
if earlier then return {1, tonumber(earlier)} end

local charges = {}
local state = {}
for i = 1, n do
  local window = math.max(tonumber(arg(i, 1)), 1)
  local calendar = arg(i, 2) == '1'
  local from
  if calendar then from = now - now % window else from = math.max(now + 1 - window, 0) end
  charges[i] = {window = window, calendar = calendar, from = from,
                max = tonumber(arg(i, 3)), amount = tonumber(arg(i, 4))}
  local z = KEYS[2 * i - 1]
  local st = state[z]
  if st == nil then
    state[z] = {s = KEYS[2 * i], from = from, widest = window, pending = 0}
  else
    st.from = math.min(st.from, from)
    st.widest = math.max(st.widest, window)
  end
end

-- Drop what no charge of this call counts any more, keeping each running sum in step:
-- afterwards the sum is exactly what the charges on that key count.
for z, st in pairs(state) do
  st.acc = load_sum(z, st.s)
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. num(st.from))
  if #dead > 0 then
    for _, m in ipairs(dead) do add(st.acc, -amount_of(m)) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. num(st.from))
    store_sum(z, st.s, st.acc)
  end
end

for i = 1, n do
  local ch = charges[i]
  local z = KEYS[2 * i - 1]
  local st = state[z]
  -- Entries stamped after now (a clock that went back) count, as if made now.
  local used = st.acc[1] + st.acc[2] + st.pending
  if ch.from > st.from then
    -- The same key with a longer window in this call kept entries this one does not count.
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', z, num(st.from), '(' .. num(ch.from))) do
      used = used - amount_of(m)
    end
  end
  if used + ch.amount > ch.max + EPSILON then
    local retry = ch.window
    if ch.calendar then
      retry = ch.from + ch.window - now
    elseif ch.amount <= ch.max + EPSILON then
      -- Entries leave the window oldest first; this call's own pending entries (made now)
      -- would leave last, after exactly one window: the default.
      local excess = used + ch.amount - ch.max
      local freed = 0
      local offset = 0
      local found = false
      while not found do
        local rows = redis.call('ZRANGEBYSCORE', z, num(ch.from), '+inf',
                                'WITHSCORES', 'LIMIT', offset, 64)
        if #rows == 0 then break end
        for j = 1, #rows, 2 do
          freed = freed + amount_of(rows[j])
          if freed + EPSILON >= excess then
            retry = math.min(tonumber(rows[j + 1]), now) + ch.window - now
            found = true
            break
          end
        end
        offset = offset + #rows / 2
      end
    end
    return {0, i - 1, retry}
  end
  st.pending = st.pending + ch.amount
end

for i = 1, n do
  local z = KEYS[2 * i - 1]
  redis.call('ZADD', z, num(now), member(i))
  add(state[z].acc, charges[i].amount)
end
for z, st in pairs(state) do
  redis.call('HSET', st.s, 's', string.format('%.17g', st.acc[1]),
             'c', string.format('%.17g', st.acc[2]))
  local expires = num(now + st.widest + SLACK_MS)
  redis.call('PEXPIREAT', z, expires)
  redis.call('PEXPIREAT', st.s, expires)
end
return {1, now}
"#;

/// The rollback script: KEYS are (entries set, sum hash) pairs of the distinct counter keys,
/// ARGV[1] the nonce, ARGV[2] the reservation's time. Answers how many entries it removed.
const ROLLBACK_LUA: &str = r#"
local prefix = ARGV[1] .. ':'
local removed = 0
for p = 1, #KEYS, 2 do
  local z, s = KEYS[p], KEYS[p + 1]
  local acc = load_sum(z, s)
  local changed = false
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', z, ARGV[2], ARGV[2])) do
    if string.sub(m, 1, #prefix) == prefix then
      removed = removed + redis.call('ZREM', z, m)
      add(acc, -amount_of(m))
      changed = true
    end
  end
  if changed then store_sum(z, s, acc) end
end
return removed
"#;

/// The void script: marks a given-up reservation attempt and takes back whatever it consumed.
/// KEYS: the void mark, then for charge i its entries set at 2i and its sum hash at 2i+1.
/// ARGV: how long to keep the mark (ms), the nonce, then the amount of charge i at 2+i (as
/// the reserve spelt it). Answers how many entries it removed. Idempotent.
const VOID_LUA: &str = r#"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
local nonce = ARGV[2]
local removed = 0
local touched = {}
for i = 1, (#KEYS - 1) / 2 do
  local z, s = KEYS[2 * i], KEYS[2 * i + 1]
  local m = nonce .. ':' .. (i - 1) .. ':' .. ARGV[2 + i]
  if redis.call('ZSCORE', z, m) then
    local st = touched[z]
    if st == nil then
      st = {s = s, acc = load_sum(z, s)}
      touched[z] = st
    end
    removed = removed + redis.call('ZREM', z, m)
    add(st.acc, -amount_of(m))
  end
end
for z, st in pairs(touched) do store_sum(z, st.s, st.acc) end
return removed
"#;

/// The counter store of a cluster deployment: counters in Redis, shared by every gateway
/// that points at the same Redis (and key prefix). See the [module docs](self).
pub struct RedisCounterStore {
    /// The connection, shared with the background tasks that void given-up reservations.
    link: Arc<Link>,
    prefix: String,
    reserve_script: Script,
    rollback_script: Script,
    void_script: Script,
}

/// The connection to Redis and how to use it.
struct Link {
    client: Client,
    /// The Redis URL without credentials, for messages.
    target: String,
    timeout: Duration,
    /// The connection in use, if any, and a number that changes whenever it is replaced.
    slot: Mutex<Slot>,
    /// Held while connecting; remembers the last failed attempt so that the callers queued
    /// behind it share its answer instead of each trying again.
    connecting: tokio::sync::Mutex<Option<Failure>>,
}

#[derive(Default)]
struct Slot {
    generation: u64,
    connection: Option<MultiplexedConnection>,
}

struct Failure {
    at: Instant,
    cause: String,
}

/// A failed operation, and whether it may still have taken effect (or may yet): it was sent,
/// and Redis did not answer with an error.
struct Failed {
    error: StoreError,
    in_doubt: bool,
}

/// Marks "no connection in use" in the attempt tracker.
const NO_GENERATION: u64 = u64::MAX;

impl fmt::Debug for RedisCounterStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCounterStore")
            .field("target", &self.link.target)
            .field("prefix", &self.prefix)
            .field("timeout", &self.link.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisCounterStore {
    /// A store on the Redis at `url` (`redis://[user:password@]host[:port][/db]` or
    /// `redis+unix:///path`). Connects lazily: this only checks the URL, so a gateway starts
    /// even while Redis is down (calls needing a counter then fail until it is back).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let target = without_credentials(url);
        let client = Client::open(url).map_err(|e| StoreError {
            message: format!("counter store: invalid redis url {target}: {e}"),
        })?;
        Ok(RedisCounterStore {
            link: Arc::new(Link::new(client, target, DEFAULT_TIMEOUT)),
            prefix: DEFAULT_KEY_PREFIX.to_string(),
            reserve_script: Script::new(&[COMMON_LUA, RESERVE_LUA].concat()),
            rollback_script: Script::new(&[COMMON_LUA, ROLLBACK_LUA].concat()),
            void_script: Script::new(&[COMMON_LUA, VOID_LUA].concat()),
        })
    }

    /// Puts `prefix` instead of [`DEFAULT_KEY_PREFIX`] before every counter key, e.g. to let
    /// several independent deployments share one Redis. Gateways that must share budgets must
    /// use the same prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the deadline of each operation (connecting included) instead of
    /// [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        let (client, target) = (self.link.client.clone(), self.link.target.clone());
        self.link = Arc::new(Link::new(client, target, timeout));
        self
    }

    /// Checks that Redis answers (`PING`), e.g. to report at startup whether the store is
    /// reachable. Not needed before use.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.link
            .run(|mut conn| async move {
                redis::cmd("PING").query_async::<String>(&mut conn).await?;
                Ok(())
            })
            .await
    }

    /// Not part of the API: a test hook. Reserves like [`CounterStore::reserve`], with the
    /// attempt's nonce chosen by the caller (it must be unique per attempt).
    #[doc(hidden)]
    pub async fn reserve_with_nonce(
        &self,
        nonce: &str,
        charges: &[Charge],
    ) -> Result<Reserve, StoreError> {
        self.reserve_as(nonce, charges).await
    }

    /// Not part of the API: a test hook. Voids the reservation attempt `nonce` of `charges`
    /// once, now, as the store does in the background after a reserve it gave up on.
    #[doc(hidden)]
    pub async fn void_now(&self, nonce: &str, charges: &[Charge]) -> Result<(), StoreError> {
        let (keys, args, _keep) = self.void_parts(nonce, charges);
        self.link.void(&self.void_script, &keys, &args).await
    }

    async fn reserve_now(&self, charges: &[Charge]) -> Result<Reserve, StoreError> {
        let nonce = format!("{:032x}", rand::random::<u128>());
        self.reserve_as(&nonce, charges).await
    }

    async fn reserve_as(&self, nonce: &str, charges: &[Charge]) -> Result<Reserve, StoreError> {
        let keys: Vec<String> = charges.iter().map(|c| c.key.clone()).collect();
        if charges.is_empty() {
            return Ok(Reserve::Granted(Reservation {
                id: format!("{nonce}@0"),
                keys,
            }));
        }
        let mut invocation = self.reserve_script.prepare_invoke();
        invocation.arg(nonce);
        for charge in charges {
            if !(charge.amount.is_finite() && charge.amount >= 0.0 && charge.max.is_finite()) {
                return Err(StoreError {
                    message: format!(
                        "counter store: invalid charge on {}: amount {} and max {} must be \
                         finite numbers, the amount not negative",
                        charge.key, charge.amount, charge.max
                    ),
                });
            }
            let (entries, sum) = self.redis_keys(&charge.key);
            invocation
                .key(entries)
                .key(sum)
                .arg(charge.window_ms)
                .arg(if charge.calendar { "1" } else { "0" })
                .arg(charge.max.to_string())
                .arg(charge.amount.to_string());
        }
        invocation.key(self.void_mark(nonce));
        let invocation = &invocation;
        let answer: Vec<i64> = match self
            .link
            .attempt(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
        {
            Ok(answer) => answer,
            Err(Failed { error, in_doubt }) => {
                if in_doubt {
                    self.void_in_background(nonce, charges);
                }
                return Err(error);
            }
        };
        match answer.as_slice() {
            [1, at_ms] => Ok(Reserve::Granted(Reservation {
                id: format!("{nonce}@{at_ms}"),
                keys,
            })),
            [0, charge, retry_after_ms] if (*charge as usize) < charges.len() => {
                Ok(Reserve::Exceeded {
                    charge: *charge as usize,
                    retry_after_ms: (*retry_after_ms).max(0) as u64,
                })
            }
            [2] => Err(self
                .link
                .unavailable("the reservation attempt was voided: it had been given up on")),
            other => {
                // Whatever the script did, the caller is told it failed: it must not count.
                self.void_in_background(nonce, charges);
                Err(self
                    .link
                    .unavailable(&format!("unexpected script answer {other:?}")))
            }
        }
    }

    /// Voids the reservation attempt `nonce` of `charges` in the background, retrying until
    /// it succeeds or can no longer matter (see the module documentation). Never waits.
    fn void_in_background(&self, nonce: &str, charges: &[Charge]) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (keys, args, keep) = self.void_parts(nonce, charges);
        let link = self.link.clone();
        let script = self.void_script.clone();
        runtime.spawn(async move {
            // No deadline if it is beyond what an Instant can hold: until it succeeds.
            let give_up = Instant::now().checked_add(keep);
            let mut pause = VOID_FIRST_RETRY;
            while link.void(&script, &keys, &args).await.is_err() {
                if give_up.is_some_and(|t| Instant::now() + pause > t) {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(VOID_MAX_RETRY);
            }
        });
    }

    /// The keys and arguments of the void script for the attempt `nonce` of `charges`, and
    /// how long the attempt can matter: its widest window plus [`VOID_MARGIN`].
    fn void_parts(&self, nonce: &str, charges: &[Charge]) -> (Vec<String>, Vec<String>, Duration) {
        let widest = charges.iter().map(|c| c.window_ms).max().unwrap_or(0);
        let keep = Duration::from_millis(widest).saturating_add(VOID_MARGIN);
        let keep_ms = widest
            .saturating_add(VOID_MARGIN.as_millis() as u64)
            .min(MAX_VOID_MARK_MS);
        let mut keys = vec![self.void_mark(nonce)];
        let mut args = vec![keep_ms.to_string(), nonce.to_string()];
        for charge in charges {
            let (entries, sum) = self.redis_keys(&charge.key);
            keys.push(entries);
            keys.push(sum);
            args.push(charge.amount.to_string());
        }
        (keys, args, keep)
    }

    async fn rollback_now(&self, reservation: &Reservation) -> Result<(), StoreError> {
        let Some((nonce, at_ms)) = reservation
            .id
            .split_once('@')
            .filter(|(nonce, at)| !nonce.is_empty() && at.parse::<u64>().is_ok())
        else {
            return Err(StoreError {
                message: format!(
                    "counter store: {:?} is not a reservation of the redis counter store",
                    reservation.id
                ),
            });
        };
        let mut seen = HashSet::new();
        let mut invocation = self.rollback_script.prepare_invoke();
        let mut any = false;
        for key in &reservation.keys {
            if seen.insert(key.as_str()) {
                let (entries, sum) = self.redis_keys(key);
                invocation.key(entries).key(sum);
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        invocation.arg(nonce).arg(at_ms);
        let invocation = &invocation;
        self.link
            .run(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
            .await
            .map(|_removed| ())
    }

    /// The Redis keys of a counter: its entries (sorted set) and its running sum (hash).
    fn redis_keys(&self, key: &str) -> (String, String) {
        let entries = format!("{}{{{key}}}", self.prefix);
        let sum = format!("{entries}:sum");
        (entries, sum)
    }

    /// The Redis key marking the reservation attempt `nonce` as given up on.
    fn void_mark(&self, nonce: &str) -> String {
        format!("{}void:{nonce}", self.prefix)
    }
}

impl Link {
    fn new(client: Client, target: String, timeout: Duration) -> Self {
        Link {
            client,
            target,
            timeout,
            slot: Mutex::new(Slot::default()),
            connecting: tokio::sync::Mutex::new(None),
        }
    }

    /// One attempt to run the void script (keys and arguments from `void_parts`).
    async fn void(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<(), StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let invocation = &invocation;
        self.run(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
            .await
            .map(|_removed| ())
    }

    /// Runs `op` on a connection within the deadline; on a broken connection, once more on a
    /// fresh one (so `op` must be safe to repeat).
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.attempt(op).await.map_err(|failed| failed.error)
    }

    /// [`run`](Self::run), telling on failure whether `op` may have taken effect anyway.
    async fn attempt<T, F, Fut>(&self, mut op: F) -> Result<T, Failed>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let in_use = AtomicU64::new(NO_GENERATION);
        let in_doubt = AtomicBool::new(false);
        let attempts = async {
            let mut retried = false;
            loop {
                let (generation, conn) = self.connection().await?;
                in_use.store(generation, Ordering::Relaxed);
                match op(conn).await {
                    Ok(value) => return Ok(value),
                    Err(e) => {
                        // Unless Redis answered with an error, `op` may have run.
                        if e.code().is_none() {
                            in_doubt.store(true, Ordering::Relaxed);
                        }
                        let broken = breaks_connection(&e);
                        if broken {
                            self.invalidate(generation);
                        }
                        if broken && !retried {
                            retried = true;
                            continue;
                        }
                        return Err(describe(&e));
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(cause)) => Err(Failed {
                error: self.unavailable(&cause),
                in_doubt: in_doubt.load(Ordering::Relaxed),
            }),
            Err(_elapsed) => {
                // A connection that lets a deadline pass may be dead without knowing it.
                let generation = in_use.load(Ordering::Relaxed);
                if generation != NO_GENERATION {
                    self.invalidate(generation);
                }
                Err(Failed {
                    error: self.unavailable(&format!("no answer within {:?}", self.timeout)),
                    // Sent (or being sent) and unanswered: it may run yet.
                    in_doubt: generation != NO_GENERATION || in_doubt.load(Ordering::Relaxed),
                })
            }
        }
    }

    /// The connection in use, made now if there is none.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), String> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let asked = Instant::now();
        let mut last_failure = self.connecting.lock().await;
        if let Some(current) = self.current() {
            return Ok(current);
        }
        if let Some(failure) = last_failure.as_ref().filter(|f| f.at >= asked) {
            return Err(failure.cause.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                *last_failure = None;
                let mut slot = self.slot();
                slot.generation += 1;
                slot.connection = Some(conn.clone());
                Ok((slot.generation, conn))
            }
            Err(e) => {
                let cause = describe(&e);
                *last_failure = Some(Failure {
                    at: Instant::now(),
                    cause: cause.clone(),
                });
                Err(cause)
            }
        }
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let slot = self.slot();
        slot.connection
            .as_ref()
            .map(|conn| (slot.generation, conn.clone()))
    }

    /// Forgets the connection `generation` (unless it was already replaced); the next call
    /// connects afresh.
    fn invalidate(&self, generation: u64) {
        let mut slot = self.slot();
        if slot.generation == generation {
            slot.connection = None;
        }
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn unavailable(&self, cause: &str) -> StoreError {
        StoreError {
            message: format!("counter store unavailable: {}: {cause}", self.target),
        }
    }
}

impl CounterStore for RedisCounterStore {
    fn reserve<'a>(&'a self, charges: &'a [Charge]) -> StoreFuture<'a, Reserve> {
        Box::pin(self.reserve_now(charges))
    }

    fn rollback<'a>(&'a self, reservation: &'a Reservation) -> StoreFuture<'a, ()> {
        Box::pin(self.rollback_now(reservation))
    }
}

/// Whether an error may have left the connection unusable (so it is replaced): I/O errors,
/// a closed connection, an unparsable answer, and a server that turned read-only (a
/// failover: the address may point at a new primary once reconnected).
fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error() || e.kind() == ErrorKind::ReadOnly
}

fn describe(e: &RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused".to_string()
    } else if e.is_connection_dropped() {
        format!("connection lost ({e})")
    } else {
        e.to_string()
    }
}

/// `url` without the `user:password@` part, for messages.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_show_credentials() {
        assert_eq!(
            without_credentials("redis://:s3cret@cache:6379/2"),
            "redis://cache:6379/2"
        );
        assert_eq!(
            without_credentials("redis://user:p@ss@10.0.0.1"),
            "redis://10.0.0.1"
        );
        assert_eq!(
            without_credentials("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            without_credentials("redis+unix:///run/redis.sock"),
            "redis+unix:///run/redis.sock"
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let err = RedisCounterStore::connect("http://:hunter2@example").unwrap_err();
        assert!(err.message.contains("invalid redis url"), "{err}");
        assert!(!err.message.contains("hunter2"), "{err}");
        let err = RedisCounterStore::connect("rediss://cache:6380").unwrap_err();
        assert!(err.message.contains("rediss://cache:6380"), "{err}");
    }
}
