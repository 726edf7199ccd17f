//! Client sessions: which grant owns them, what was negotiated, and (for upstreams the
//! gateway serves itself) the SSE streams with a replay log for `Last-Event-ID` resumption.
//!
//! Replicas (cluster mode) share sessions without sharing a session table: a session's id
//! carries what another replica needs to serve it — its record (grant, server, negotiated
//! revision, the upstream's session id, the client's capabilities), signed with a key every
//! replica reads from the shared store ([`SessionSeal`]). A replica that meets an id it does
//! not know opens it and serves the session from then on; a forged or altered id is just an
//! unknown session (404). What stays with one replica: the replay log of its SSE streams
//! (a GET stream resumed on another replica starts afresh), and an ended session, which
//! another replica that knew it may still serve — for an HTTP upstream the upstream's own
//! 404 then ends it there too.

use crate::signed::Signer;
use bytes::Bytes;
use rand::RngCore;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use toolgate_mcp::sse;
use toolgate_store::{SessionRecord, SessionStore};

impl std::ops::Deref for Session {
    type Target = SessionRecord;
    fn deref(&self) -> &SessionRecord {
        &self.record
    }
}

/// What a sealed session id starts with.
const SEALED: &str = "tgs2.";

/// Seals session records into ids that every replica can open (see the module docs).
#[derive(Debug)]
pub struct SessionSeal(Signer);

impl SessionSeal {
    /// The seal made from `secret` (32 random bytes shared by every replica).
    pub fn new(secret: &[u8; 32]) -> SessionSeal {
        SessionSeal(Signer::new(secret))
    }

    /// An id carrying `record` (its own `id` aside), and a nonce so that two sessions of the
    /// same client never share one.
    fn seal(&self, record: &SessionRecord) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let payload = json!({
            "n": toolgate_store::audit::hex(&nonce),
            "g": record.grant,
            "s": record.server,
            "v": record.protocol_version,
            "u": record.upstream_session,
            "c": record.client_capabilities,
        });
        self.0.sign(SEALED, payload.to_string().as_bytes())
    }

    /// The record an id carries, if this seal made it unaltered.
    fn open(&self, id: &str) -> Option<SessionRecord> {
        let payload: Value = serde_json::from_slice(&self.0.open(SEALED, id)?).ok()?;
        Some(SessionRecord {
            id: id.to_owned(),
            grant: payload.get("g")?.as_str()?.to_owned(),
            server: payload.get("s")?.as_str()?.to_owned(),
            protocol_version: payload.get("v")?.as_str()?.to_owned(),
            upstream_session: payload.get("u")?.as_str().map(str::to_owned),
            client_capabilities: payload.get("c").cloned().unwrap_or(Value::Null),
        })
    }
}

/// The GET stream's number; POST streams count up from 1.
pub const GET_STREAM: u64 = 0;

/// How many recent events a session keeps for resumption.
const REPLAY_EVENTS: usize = 1024;

/// One client session: what is remembered of it ([`SessionRecord`], reachable through
/// `Deref` as `session.id`, `session.grant`, …) plus its live streams.
#[derive(Debug)]
pub struct Session {
    /// Identity, owner and negotiated parameters; persisted in the store.
    record: SessionRecord,
    /// Streams and replay log (used where the gateway itself serves the session).
    events: Mutex<EventLog>,
    /// When the client last sent a request on this session.
    last_active: Mutex<Instant>,
    /// Requests the gateway itself sent the client (an approval question), by JSON-RPC id,
    /// waiting for the client's answer.
    asked: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// GET streams relayed from an HTTP upstream, waiting for notifications of the
    /// gateway's own to slip in (see [`Session::notify`]).
    relayed: Mutex<Vec<mpsc::UnboundedSender<Value>>>,
}

/// The SSE streams of a session.
#[derive(Debug, Default)]
struct EventLog {
    /// Live streams by number.
    streams: HashMap<u64, StreamSlot>,
    /// Recent events: (stream, seq, encoded event).
    log: VecDeque<(u64, u64, Bytes)>,
    /// Next POST stream number.
    next_stream: u64,
}

/// One SSE stream of a session.
#[derive(Debug, Default)]
struct StreamSlot {
    /// The connected client, if any (None after a disconnect until it resumes).
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    /// Sequence number of the next event.
    next_seq: u64,
    /// The stream has delivered its final message.
    closed: bool,
}

impl Session {
    /// A new session with a fresh random id.
    pub fn new(
        grant: &str,
        server: &str,
        protocol_version: &str,
        upstream_session: Option<String>,
        client_capabilities: Value,
    ) -> Session {
        let mut raw = [0u8; 16];
        rand::rng().fill_bytes(&mut raw);
        Session::restore(SessionRecord {
            id: format!("tgs-{}", toolgate_store::audit::hex(&raw)),
            grant: grant.to_owned(),
            server: server.to_owned(),
            protocol_version: protocol_version.to_owned(),
            upstream_session,
            client_capabilities,
        })
    }

    /// The stand-in for a session that a stateless (2026-07-28) request runs in: never
    /// stored, gone with the request. Its id names the caller, so that a `session`-scoped
    /// limit counts per caller in that era, where no session exists to count in.
    pub fn stateless(
        principal: &str,
        server: &str,
        protocol_version: &str,
        client_capabilities: Value,
    ) -> Session {
        Session::restore(SessionRecord {
            id: format!("stateless:{principal}"),
            grant: principal.to_owned(),
            server: server.to_owned(),
            protocol_version: protocol_version.to_owned(),
            upstream_session: None,
            client_capabilities,
        })
    }

    /// Whether this stands in for a stateless request (see [`Session::stateless`]).
    pub fn is_stateless(&self) -> bool {
        self.record.id.starts_with("stateless:")
    }

    /// A session from its stored record (streams start empty: events of a previous gateway
    /// process cannot be replayed).
    pub fn restore(record: SessionRecord) -> Session {
        let mut log = EventLog {
            next_stream: 1,
            ..EventLog::default()
        };
        log.streams.insert(GET_STREAM, StreamSlot::default());
        Session {
            record,
            events: Mutex::new(log),
            last_active: Mutex::new(Instant::now()),
            asked: Mutex::default(),
            relayed: Mutex::default(),
        }
    }

    /// Sends a notification of the gateway's own (a policy reload's
    /// `notifications/tools/list_changed`) to the client: on the GET stream the gateway
    /// serves, or, for an HTTP upstream, into the GET streams relayed from it.
    pub fn notify(&self, message: &Value) {
        self.push(None, message);
        self.relayed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|tx| tx.send(message.clone()).is_ok());
    }

    /// What [`Session::notify`] sends, for a GET stream relayed from an HTTP upstream.
    pub fn relayed_notices(&self) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.relayed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// What the store keeps of this session.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// Records activity (every request that names the session).
    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Whether the session has been unused for longer than `limit`. A client that holds a
    /// stream open is using the session even while it sends nothing.
    pub fn idle_longer_than(&self, limit: Duration) -> bool {
        let idle = self
            .last_active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            > limit;
        idle && !self.has_listener()
    }

    fn has_listener(&self) -> bool {
        let log = self.events.lock().unwrap_or_else(|e| e.into_inner());
        log.streams
            .values()
            .any(|s| s.tx.as_ref().is_some_and(|tx| !tx.is_closed()))
    }

    /// Waits for the client's answer to the gateway's own request `id` (see
    /// [`Session::answered`]).
    pub fn ask(&self, id: &str) -> oneshot::Receiver<Value> {
        let (tx, rx) = oneshot::channel();
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), tx);
        rx
    }

    /// Stops waiting for an answer to `id`.
    pub fn forget(&self, id: &str) {
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Hands a client response to the gateway's own request it answers; `false` when it
    /// answers no request of the gateway's (then it is the upstream's).
    pub fn answered(&self, response: &Value) -> bool {
        let Some(id) = response.get("id").and_then(Value::as_str) else {
            return false;
        };
        let waiting = self
            .asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        match waiting {
            Some(tx) => {
                let _ = tx.send(response.clone());
                true
            }
            None => false,
        }
    }

    /// Whether the client declared `capability` (`elicitation`, `sampling`, `roots`).
    pub fn has_capability(&self, capability: &str) -> bool {
        self.client_capabilities
            .get(capability)
            .is_some_and(|v| !v.is_null())
    }

    /// Opens a POST response stream; returns its number and the body's receiver.
    pub fn open_stream(&self) -> (u64, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut log = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let number = log.next_stream;
        log.next_stream += 1;
        log.streams.insert(
            number,
            StreamSlot {
                tx: Some(tx),
                ..StreamSlot::default()
            },
        );
        (number, rx)
    }

    /// Sends `message` on `stream` if it is still open, else on the GET stream.
    /// Every event is logged so a client that lost its connection can resume.
    pub fn push(&self, stream: Option<u64>, message: &Value) {
        let json = message.to_string();
        let mut log = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let number = match stream {
            Some(n) if log.streams.get(&n).is_some_and(|s| !s.closed) => n,
            _ => GET_STREAM,
        };
        let Some(slot) = log.streams.get_mut(&number) else {
            return;
        };
        let seq = slot.next_seq;
        slot.next_seq += 1;
        let event = sse::encode_message(Some(&format!("{number}-{seq}")), &json);
        if let Some(tx) = &slot.tx {
            if tx.send(event.clone()).is_err() {
                slot.tx = None;
            }
        }
        log.log.push_back((number, seq, event));
        if log.log.len() > REPLAY_EVENTS {
            log.log.pop_front();
        }
    }

    /// Sends a priming event (an id, empty data) on a new stream, so a client that loses the
    /// connection before any message can still resume with `Last-Event-ID`.
    pub fn prime(&self, stream: u64) {
        let mut log = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = log.streams.get_mut(&stream) else {
            return;
        };
        let seq = slot.next_seq;
        slot.next_seq += 1;
        let event = Bytes::from(format!("id: {stream}-{seq}\ndata: \n\n"));
        if let Some(tx) = &slot.tx {
            let _ = tx.send(event);
        }
    }

    /// Marks a POST stream complete: its response ends after what was sent.
    pub fn close_stream(&self, stream: u64) {
        let mut log = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = log.streams.get_mut(&stream) {
            slot.closed = true;
            slot.tx = None;
        }
        // Keep closed streams only as long as their events can still be replayed.
        let live: std::collections::HashSet<u64> = log.log.iter().map(|e| e.0).collect();
        log.streams
            .retain(|n, s| *n == GET_STREAM || !s.closed || live.contains(n));
    }

    /// Attaches a GET request: replays what followed `last_event_id` on its stream and
    /// continues that stream (or the GET stream) live.
    pub fn attach(&self, last_event_id: Option<&str>) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut log = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let resume = last_event_id.and_then(|id| {
            let (stream, seq) = id.split_once('-')?;
            Some((stream.parse::<u64>().ok()?, seq.parse::<u64>().ok()?))
        });
        let (stream, after) = match resume {
            Some((stream, seq)) if log.streams.contains_key(&stream) => (stream, Some(seq)),
            _ => (GET_STREAM, None),
        };
        if let Some(after) = after {
            for (_, _, event) in log.log.iter().filter(|e| e.0 == stream && e.1 > after) {
                let _ = tx.send(event.clone());
            }
        }
        if let Some(slot) = log.streams.get_mut(&stream) {
            if !slot.closed {
                slot.tx = Some(tx);
            }
        }
        rx
    }
}

/// All sessions of the gateway, persisted in a store when one is attached so that they
/// survive a restart.
#[derive(Default)]
pub struct Sessions {
    /// Sessions by id.
    by_id: Mutex<HashMap<String, Arc<Session>>>,
    /// Where sessions are remembered (none in unit tests).
    store: Option<Arc<dyn SessionStore>>,
    /// Cluster mode: ids carry their sessions, so that every replica can serve them.
    seal: Option<SessionSeal>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions persisted in `store`, with those it remembers restored, except sessions of
    /// servers for which `keep` says no (they are forgotten).
    pub fn restore(
        store: Arc<dyn SessionStore>,
        keep: impl Fn(&SessionRecord) -> bool,
    ) -> Sessions {
        let records = store.load_sessions().unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not restore sessions; clients will initialize again");
            Vec::new()
        });
        let mut by_id = HashMap::new();
        for record in records {
            if keep(&record) {
                by_id.insert(record.id.clone(), Arc::new(Session::restore(record)));
            } else if let Err(e) = store.delete_session(&record.id) {
                tracing::warn!(error = %e, "could not forget a stale session");
            }
        }
        if !by_id.is_empty() {
            tracing::info!(sessions = by_id.len(), "restored sessions from the store");
        }
        Sessions {
            by_id: Mutex::new(by_id),
            store: Some(store),
            seal: None,
        }
    }

    /// The same sessions, with ids that every replica sharing `seal`'s key can open.
    pub fn sealed(self, seal: SessionSeal) -> Sessions {
        Sessions {
            seal: Some(seal),
            ..self
        }
    }

    fn forget(&self, id: &str) {
        if let Some(store) = &self.store {
            if let Err(e) = store.delete_session(id) {
                tracing::warn!(error = %e, session = %id, "could not delete a session from the store");
            }
        }
    }

    /// Registers a session. A session that cannot be persisted still works; it just will not
    /// survive a restart (logged).
    pub fn insert(&self, session: Session) -> Arc<Session> {
        let session = match &self.seal {
            Some(seal) => Session::restore(SessionRecord {
                id: seal.seal(session.record()),
                ..session.record().clone()
            }),
            None => session,
        };
        if let Some(store) = &self.store {
            if let Err(e) = store.save_session(session.record()) {
                tracing::warn!(error = %e, session = %session.id, "could not persist a session");
            }
        }
        let session = Arc::new(session);
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session.id.clone(), Arc::clone(&session));
        session
    }

    /// The session `id`, if it exists and belongs to `grant` on `server`. A session of
    /// another grant is reported as absent, so ids cannot be probed across grants.
    /// A sealed id this replica has not met yet (another replica opened the session) is
    /// opened and served from now on.
    pub fn get(&self, id: &str, grant: &str, server: &str) -> Option<Arc<Session>> {
        let known = self
            .by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        let session = match known {
            Some(session) => session,
            None => {
                let record = self.seal.as_ref()?.open(id)?;
                let session = Arc::new(Session::restore(record));
                let mut by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
                Arc::clone(by_id.entry(id.to_owned()).or_insert(session))
            }
        };
        Some(session)
            .filter(|s| s.grant == grant && s.server == server)
            .inspect(|s| s.touch())
    }

    /// Removes and returns every session idle for longer than `limit`.
    pub fn expire_idle(&self, limit: Duration) -> Vec<Arc<Session>> {
        let mut by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<String> = by_id
            .values()
            .filter(|s| s.idle_longer_than(limit))
            .map(|s| s.id.clone())
            .collect();
        let removed: Vec<Arc<Session>> = expired.iter().filter_map(|id| by_id.remove(id)).collect();
        drop(by_id);
        for id in &expired {
            self.forget(id);
        }
        removed
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let removed = self
            .by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.forget(id);
        removed
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session on `server` (for broadcasting upstream notifications).
    pub fn on_server(&self, server: &str) -> Vec<Arc<Session>> {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.server == server)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sealed_session_is_served_by_every_replica_with_the_key_and_no_other() {
        let replica = |key: u8| Sessions {
            seal: Some(SessionSeal::new(&[key; 32])),
            ..Sessions::default()
        };
        let (one, two, stranger) = (replica(1), replica(1), replica(2));
        let opened = one.insert(Session::new(
            "alice",
            "files",
            "2025-11-25",
            Some("upstream-7".into()),
            json!({"elicitation": {}}),
        ));
        assert!(opened.id.starts_with(SEALED), "{}", opened.id);
        let served = two
            .get(&opened.id, "alice", "files")
            .expect("another replica opens it");
        assert_eq!(served.record(), opened.record());
        assert_eq!(two.len(), 1, "and keeps it");
        assert!(
            two.get(&opened.id, "bob", "files").is_none(),
            "another grant"
        );
        assert!(
            two.get(&opened.id, "alice", "other").is_none(),
            "another server"
        );
        assert!(
            stranger.get(&opened.id, "alice", "files").is_none(),
            "another key"
        );
        let mut altered = opened.id.clone().into_bytes();
        let at = SEALED.len() + 3;
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(
            replica(1).get(&altered, "alice", "files").is_none(),
            "an altered id"
        );
        let again = one.insert(Session::new(
            "alice",
            "files",
            "2025-11-25",
            None,
            json!({}),
        ));
        assert_ne!(again.id, opened.id, "two sessions never share an id");
        // Without a seal, ids are plain and stay with their gateway.
        let plain =
            Sessions::default().insert(Session::new("a", "b", "2025-11-25", None, json!({})));
        assert!(plain.id.starts_with("tgs-"));
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Bytes>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push(String::from_utf8(b.to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn sessions_are_bound_to_their_grant_and_server() {
        let sessions = Sessions::default();
        let s = sessions.insert(Session::new("g", "a", "2025-11-25", None, json!({})));
        assert!(sessions.get(&s.id, "g", "a").is_some());
        assert!(sessions.get(&s.id, "other", "a").is_none());
        assert!(sessions.get(&s.id, "g", "b").is_none());
        assert!(s.id.starts_with("tgs-") && s.id.len() == 36);
    }

    #[test]
    fn idle_sessions_expire_unless_a_stream_is_attached() {
        let sessions = Sessions::default();
        let idle = sessions.insert(Session::new("g", "a", "2025-11-25", None, json!({})));
        let listening = sessions.insert(Session::new("g", "a", "2025-11-25", None, json!({})));
        let _rx = listening.attach(None);
        std::thread::sleep(Duration::from_millis(20));
        let expired = sessions.expire_idle(Duration::from_millis(10));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].id, idle.id);
        assert!(sessions.get(&listening.id, "g", "a").is_some());
    }

    #[test]
    fn a_disconnected_post_stream_resumes_from_the_last_event_id() {
        let s = Session::new("g", "a", "2025-11-25", None, json!({}));
        let (n, rx) = s.open_stream();
        s.push(Some(n), &json!({"m": 1}));
        drop(rx); // the client goes away
        s.push(Some(n), &json!({"m": 2}));
        s.push(Some(n), &json!({"m": 3}));
        let mut resumed = s.attach(Some(&format!("{n}-0")));
        let events = drain(&mut resumed);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events[0].contains("\"m\":2") && events[0].contains(&format!("id: {n}-1")));
        s.push(Some(n), &json!({"m": 4}));
        assert_eq!(
            drain(&mut resumed).len(),
            1,
            "the resumed stream continues live"
        );
    }

    #[test]
    fn messages_for_a_closed_stream_go_to_the_get_stream() {
        let s = Session::new("g", "a", "2025-11-25", None, json!({}));
        let mut get = s.attach(None);
        let (n, _rx) = s.open_stream();
        s.close_stream(n);
        s.push(Some(n), &json!({"late": true}));
        let events = drain(&mut get);
        assert_eq!(events.len(), 1);
        assert!(events[0].contains("id: 0-0"));
    }
}
