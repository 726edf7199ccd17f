//! Stdio upstreams: one supervised child process per server, shared by every client.
//!
//! The gateway is the child's only MCP client. It initializes the child once, declaring the
//! capabilities its clients may use, and multiplexes client sessions onto it: request ids
//! and progress tokens are replaced with gateway-unique ones on the way in and restored on
//! the way out, so no client ever sees another's messages.
//!
//! Requests the child sends to a client (elicitation, sampling, roots) carry nothing on stdio
//! that says which call caused them. Guessing would let one user answer — or read — another
//! user's elicitation, so the gateway makes the answer certain instead. A session whose client
//! declared elicitation, sampling or roots runs its `tools/call`s on the child exclusively
//! (its own calls still run concurrently); calls of sessions without those capabilities share
//! the child freely, since whatever the child asks them is refused anyway. A child-to-client
//! request goes to the session holding the child exclusively; otherwise to the only session
//! with requests in flight; and it is refused with a JSON-RPC error when there is none, when
//! several could have caused it, or when the client lacks the capability. The cost is
//! concurrency between capable clients sharing one stdio server.

use crate::config::{ServerSpec, UpstreamSpec};
use crate::error::GatewayError;
use crate::session::{Session, Sessions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use toolgate_mcp::stdio::{Frame, LineFramer};
use toolgate_mcp::{codes, jsonrpc, version, Kind, Message};

/// First restart delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long is considered healthy; its next crash restarts quickly again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long a child may take to exit after its stdin is closed before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(3);

/// A signal the child is sent when it is stopped, before its input is closed: the one the
/// gateway itself got (`toolgate stdio` passes its client's signals on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM.
    Terminate,
    /// SIGINT.
    Interrupt,
}

/// How a request forwarded to the child ended.
#[derive(Debug)]
pub enum Reply {
    /// The child answered (or the gateway answered for it: exited, timed out), with the
    /// client's id restored.
    Answer(Value),
    /// The client cancelled it: MCP says no response is sent.
    Cancelled,
}

/// Early cancellations remembered (a cancel may overtake its call, which can still be
/// waiting for its turn); older ones are forgotten.
const EARLY_CANCELLATIONS: usize = 256;

/// A request the gateway sent to the child and is waiting for.
struct Pending {
    /// The client session it belongs to (None: the gateway's own request).
    session: Option<Arc<Session>>,
    /// The id the client used, restored on the response.
    client_id: Value,
    /// Where the response goes.
    reply: oneshot::Sender<Reply>,
    /// The client's POST stream for this request, if it is streamed.
    stream: Option<u64>,
    /// The rewritten progress token, removed with the request.
    progress_key: Option<String>,
    /// Arrival order, to pick the most recent call for server-to-client requests.
    seq: u64,
}

/// Where a progress token leads back to.
struct ProgressRoute {
    /// The session that asked for progress.
    session: Arc<Session>,
    /// The token the client chose.
    client_token: Value,
    /// Its request's stream.
    stream: Option<u64>,
}

/// A server-to-client request waiting for the client's answer.
struct ServerRequestRoute {
    /// The session asked.
    session_id: String,
    /// The id the child used.
    upstream_id: Value,
}

/// Mutable state of the multiplexer.
#[derive(Default)]
struct Mux {
    /// Sends lines to the running child's stdin.
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Next id / token number.
    next: u64,
    /// Requests in flight, by the numeric id the child sees.
    pending: HashMap<u64, Pending>,
    /// Progress tokens in flight, by the token the child sees.
    progress: HashMap<String, ProgressRoute>,
    /// Child-to-client requests in flight, by the id the client sees.
    server_requests: HashMap<String, ServerRequestRoute>,
    /// Who may run `tools/call`s on the child now.
    turn: TurnState,
    /// Exclusive turns being waited for: shared turns then wait too, so that a stream of
    /// shared calls cannot starve a capable client.
    exclusive_waiting: usize,
    /// Cancellations that arrived before their call reached the child: (session, client id).
    cancelled_early: std::collections::VecDeque<(String, Value)>,
}

/// A capable session's place in the queue for an exclusive turn; leaving the queue (turn
/// granted, or the wait abandoned on timeout) always lets shared calls proceed again.
struct Waiting<'a> {
    /// The upstream whose queue this is.
    upstream: &'a StdioUpstream,
    /// Whether this waiter is counted in `exclusive_waiting`.
    counted: bool,
}

impl Waiting<'_> {
    fn leave(&mut self, mux: &mut Mux) {
        if std::mem::take(&mut self.counted) {
            mux.exclusive_waiting -= 1;
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            let mut mux = self.upstream.mux();
            self.leave(&mut mux);
            drop(mux);
            self.upstream.turn_free.notify_waiters();
        }
    }
}

/// The `tools/call` admission state of a shared child.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum TurnState {
    /// No call in flight.
    #[default]
    Free,
    /// Calls of sessions without server-to-client capabilities, this many.
    Shared(usize),
    /// Calls of one capable session (its id), this many.
    Exclusive(String, usize),
}

/// A session's turn at `tools/call` on the shared child; released when dropped.
struct Turn<'a> {
    /// The upstream whose turn this is.
    upstream: &'a StdioUpstream,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut mux = self.upstream.mux();
        let released = match &mut mux.turn {
            TurnState::Shared(held) | TurnState::Exclusive(_, held) if *held > 1 => {
                *held -= 1;
                false
            }
            _ => true,
        };
        if released {
            mux.turn = TurnState::Free;
            drop(mux);
            self.upstream.turn_free.notify_waiters();
        }
    }
}

/// One stdio upstream.
pub struct StdioUpstream {
    /// Server name.
    name: String,
    /// Program.
    command: String,
    /// Arguments.
    args: Vec<String>,
    /// Extra environment.
    env: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Longest line accepted from the child (`[servers.X] max_message_bytes`).
    max_line: usize,
    /// Multiplexer state.
    mux: Mutex<Mux>,
    /// The child's InitializeResult while it is up and initialized; None otherwise.
    ready: watch::Sender<Option<Arc<Value>>>,
    /// Sessions, for broadcasting notifications.
    sessions: Arc<Sessions>,
    /// Bumped when the child announces a changed tool list (the catalogue refetches).
    pub tools_changed: watch::Sender<u64>,
    /// Wakes sessions waiting for their turn.
    turn_free: tokio::sync::Notify,
    /// Why the child's last unreadable line was not JSON-RPC (e.g. nested too deeply), for
    /// the error of a request whose answer it may have been.
    unreadable: Mutex<Option<String>>,
    /// The signal to send the child when it is stopped, if any (else its input is closed).
    stop_signal: Mutex<Option<StopSignal>>,
    /// How the last child exited.
    last_exit: Mutex<Option<std::process::ExitStatus>>,
}

impl std::fmt::Debug for StdioUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioUpstream")
            .field("name", &self.name)
            .finish()
    }
}

impl StdioUpstream {
    /// Builds the upstream; [`StdioUpstream::supervise`] starts it.
    pub fn new(server: &ServerSpec, sessions: Arc<Sessions>) -> Result<Arc<Self>, String> {
        let UpstreamSpec::Stdio { command, args, env } = &server.upstream else {
            return Err("not a stdio upstream".into());
        };
        Ok(Arc::new(StdioUpstream {
            name: server.name.clone(),
            command: command.clone(),
            args: args.clone(),
            env: env.clone(),
            timeout: server.timeout,
            max_line: server.max_message_bytes,
            mux: Mutex::new(Mux::default()),
            ready: watch::channel(None).0,
            sessions,
            tools_changed: watch::channel(0).0,
            turn_free: tokio::sync::Notify::new(),
            unreadable: Mutex::new(None),
            stop_signal: Mutex::new(None),
            last_exit: Mutex::new(None),
        }))
    }

    fn mux(&self) -> std::sync::MutexGuard<'_, Mux> {
        self.mux.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends the child `signal` when it is stopped.
    pub fn stop_with(&self, signal: StopSignal) {
        *self.stop_signal.lock().unwrap_or_else(|e| e.into_inner()) = Some(signal);
    }

    /// How the last child exited, once one has.
    pub fn last_exit(&self) -> Option<std::process::ExitStatus> {
        *self.last_exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests sent to the child and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.mux().pending.len()
    }

    /// Whether the child is up and initialized.
    pub fn is_ready(&self) -> bool {
        self.ready.borrow().is_some()
    }

    /// The child's InitializeResult, waiting up to the timeout for it to come up.
    pub async fn initialize_result(&self) -> Result<Arc<Value>, GatewayError> {
        let mut rx = self.ready.subscribe();
        let wait = async move { rx.wait_for(Option::is_some).await.map(|v| v.clone()) };
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(Some(v))) => Ok(v),
            _ => Err(GatewayError::upstream(
                &self.name,
                "is not running (the child process has not come up)",
            )),
        }
    }

    /// Runs the child until `shutdown` turns true, restarting it with back-off.
    pub async fn supervise(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = Instant::now();
            match self.run_child(&mut shutdown).await {
                // Stopped on purpose (shutdown, a reload replaced it): nothing to warn about.
                Ok(status) if *shutdown.borrow() => {
                    tracing::info!(server = %self.name, %status, "stdio upstream stopped")
                }
                Ok(status) => tracing::warn!(server = %self.name, %status, "stdio upstream exited"),
                Err(e) => tracing::error!(server = %self.name, error = %e, "stdio upstream failed"),
            }
            self.fail_all("exited");
            if *shutdown.borrow() {
                return;
            }
            if started.elapsed() > STABLE_AFTER {
                backoff = MIN_BACKOFF;
            }
            tracing::info!(server = %self.name, delay_ms = backoff.as_millis() as u64, "restarting stdio upstream");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = crate::stopped(&mut shutdown) => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One life of the child and no restart (for `toolgate scan`, which must say at once
    /// that a program cannot be started): its exit status, or why it failed.
    pub async fn run_once(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<String, String> {
        let outcome = self.run_child(&mut shutdown).await;
        self.fail_all("exited");
        outcome
    }

    /// One life of the child: spawn, initialize, serve until it exits or shutdown.
    async fn run_child(
        self: &Arc<Self>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<String, String> {
        let mut child: Child = Command::new(&self.command)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", self.command))?;
        tracing::info!(server = %self.name, pid = child.id(), command = %self.command, "stdio upstream started");
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;

        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.mux().stdin = Some(tx);
        tokio::spawn(async move {
            while let Some(mut line) = rx.recv().await {
                line.push(b'\n');
                if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes the child's input: the polite way to ask it to exit.
        });
        let name = self.name.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(server = %name, "stderr: {line}");
            }
        });
        let me = Arc::clone(self);
        let reader = tokio::spawn(async move {
            let mut framer = LineFramer::new(me.max_line);
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for frame in framer.push(&buf[..n]) {
                    match frame {
                        Frame::Line(line) => me.on_line(&line),
                        Frame::TooLong { head } => me.on_too_long(&head),
                    }
                }
            }
        });

        let me = Arc::clone(self);
        let init = async move {
            let params = json!({
                "protocolVersion": version::LATEST,
                "capabilities": {"roots": {"listChanged": true}, "sampling": {}, "elicitation": {}},
                "clientInfo": {"name": "toolgate", "version": env!("CARGO_PKG_VERSION")}
            });
            let result = me.request_own("initialize", params).await?;
            me.notify_own("notifications/initialized");
            me.ready.send_replace(Some(Arc::new(result)));
            me.tools_changed.send_modify(|n| *n += 1);
            tracing::info!(server = %me.name, "stdio upstream initialized");
            Ok::<(), GatewayError>(())
        };
        let initialized = tokio::select! {
            r = init => r,
            status = child.wait() => return Ok(describe(status)),
            _ = crate::stopped(shutdown) => Ok(()),
        };
        if let Err(e) = initialized {
            self.stop(&mut child).await;
            return Err(format!("initialize failed: {e}"));
        }
        let outcome = tokio::select! {
            status = child.wait() => {
                self.exited(&status);
                describe(status)
            }
            _ = crate::stopped(shutdown) => {
                self.stop(&mut child).await;
                "stopped".to_owned()
            }
        };
        reader.abort();
        self.ready.send_replace(None);
        Ok(outcome)
    }

    /// Sends the stop signal if one is set, closes stdin, waits a little, then kills.
    async fn stop(&self, child: &mut Child) {
        let signal = *self.stop_signal.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(signal), Some(pid)) = (signal, child.id()) {
            let signal = match signal {
                StopSignal::Terminate => rustix::process::Signal::TERM,
                StopSignal::Interrupt => rustix::process::Signal::INT,
            };
            let pid = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                if let Err(e) = rustix::process::kill_process(pid, signal) {
                    tracing::warn!(server = %self.name, "could not pass the signal on: {e}");
                }
            }
        }
        self.mux().stdin = None;
        if tokio::time::timeout(EXIT_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        let status = child.wait().await;
        self.exited(&status);
    }

    fn exited(&self, status: &std::io::Result<std::process::ExitStatus>) {
        if let Ok(status) = status {
            *self.last_exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(*status);
        }
    }

    /// Fails every in-flight request (the child is gone) so no caller hangs.
    fn fail_all(&self, what: &str) {
        self.ready.send_replace(None);
        let pending: Vec<Pending> = {
            let mut mux = self.mux();
            mux.stdin = None;
            mux.progress.clear();
            mux.server_requests.clear();
            mux.pending.drain().map(|(_, p)| p).collect()
        };
        for p in pending {
            let error = GatewayError::upstream(&self.name, what);
            let _ = p.reply.send(Reply::Answer(error.to_jsonrpc(p.client_id)));
        }
    }

    fn write<T: serde::Serialize>(&self, mux: &Mux, message: &T) -> bool {
        match &mux.stdin {
            Some(tx) => tx
                .send(serde_json::to_vec(message).unwrap_or_default())
                .is_ok(),
            None => false,
        }
    }

    /// Sends a request of the gateway's own and waits for its result.
    async fn request_own(&self, method: &str, params: Value) -> Result<Value, GatewayError> {
        let message = json!({"jsonrpc": "2.0", "id": 0, "method": method, "params": params});
        let message =
            Message::from_value(message).map_err(|e| GatewayError::internal(e.message))?;
        let Reply::Answer(response) = self.request(None, message, None).await? else {
            return Err(GatewayError::internal(format!("{method} was cancelled")));
        };
        if let Some(error) = response.get("error") {
            return Err(GatewayError::upstream(
                &self.name,
                format_args!("answered {method} with an error: {error}"),
            ));
        }
        response.get("result").cloned().ok_or_else(|| {
            GatewayError::upstream(
                &self.name,
                format_args!("answered {method} without a result"),
            )
        })
    }

    fn notify_own(&self, method: &str) {
        let mux = self.mux();
        self.write(&mux, &json!({"jsonrpc": "2.0", "method": method}));
    }

    /// Waits until `session` may run a `tools/call` on the child (see the module docs).
    async fn take_turn(&self, session: &Session) -> Turn<'_> {
        let exclusive = ["elicitation", "sampling", "roots"]
            .iter()
            .any(|c| session.has_capability(c));
        let mut waiting = Waiting {
            upstream: self,
            counted: false,
        };
        loop {
            let notified = self.turn_free.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut mux = self.mux();
                let shared_open = mux.exclusive_waiting == 0;
                let granted = match (&mux.turn, exclusive) {
                    (TurnState::Free, true) => Some(TurnState::Exclusive(session.id.clone(), 1)),
                    (TurnState::Exclusive(owner, held), true) if *owner == session.id => {
                        Some(TurnState::Exclusive(owner.clone(), held + 1))
                    }
                    (TurnState::Free, false) if shared_open => Some(TurnState::Shared(1)),
                    (TurnState::Shared(held), false) if shared_open => {
                        Some(TurnState::Shared(held + 1))
                    }
                    _ => None,
                };
                if let Some(state) = granted {
                    mux.turn = state;
                    waiting.leave(&mut mux);
                    return Turn { upstream: self };
                }
                if exclusive && !waiting.counted {
                    waiting.counted = true;
                    mux.exclusive_waiting += 1;
                }
            }
            notified.await;
        }
    }

    /// Sends a client's (or the gateway's) request to the child and waits for the answer,
    /// with the client's id (and progress token) restored. On timeout the child is told to
    /// cancel and the caller gets a JSON-RPC error naming the server.
    pub async fn request(
        &self,
        session: Option<&Arc<Session>>,
        mut message: Message,
        stream: Option<u64>,
    ) -> Result<Reply, GatewayError> {
        let client_id = message.id().cloned().unwrap_or(Value::Null);
        let _turn = match session {
            Some(session) if message.method() == Some("tools/call") => Some(
                tokio::time::timeout(self.timeout, self.take_turn(session))
                    .await
                    .map_err(|_| {
                        GatewayError::upstream(
                            &self.name,
                            format_args!(
                                "was busy with another client's calls for {} s",
                                self.timeout.as_secs_f64()
                            ),
                        )
                    })?,
            ),
            _ => None,
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let upstream_id = {
            let mut mux = self.mux();
            if let Some(session) = session {
                let early = mux
                    .cancelled_early
                    .iter()
                    .position(|(s, id)| *s == session.id && *id == client_id);
                if let Some(index) = early {
                    mux.cancelled_early.remove(index);
                    return Ok(Reply::Cancelled);
                }
            }
            if mux.stdin.is_none() {
                return Err(GatewayError::upstream(
                    &self.name,
                    "is not running (the child process is restarting)",
                ));
            }
            mux.next += 1;
            let id = mux.next;
            message.set_id(json!(id));
            let mut progress_key = None;
            if let (Some(session), Some(token)) = (session, message.progress_token().cloned()) {
                let key = format!("tgp-{id}");
                message.set_progress_token(json!(key));
                mux.progress.insert(
                    key.clone(),
                    ProgressRoute {
                        session: Arc::clone(session),
                        client_token: token,
                        stream,
                    },
                );
                progress_key = Some(key);
            }
            mux.pending.insert(
                id,
                Pending {
                    session: session.cloned(),
                    client_id: client_id.clone(),
                    reply: reply_tx,
                    stream,
                    progress_key,
                    seq: id,
                },
            );
            self.write(&mux, message.as_map());
            id
        };
        match tokio::time::timeout(self.timeout, reply_rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(GatewayError::upstream(&self.name, "dropped the request")),
            Err(_) => {
                let mut mux = self.mux();
                if let Some(p) = mux.pending.remove(&upstream_id) {
                    if let Some(key) = p.progress_key {
                        mux.progress.remove(&key);
                    }
                }
                self.write(
                    &mux,
                    &json!({"jsonrpc":"2.0","method":"notifications/cancelled",
                    "params":{"requestId": upstream_id, "reason": "toolgate: request timed out"}}),
                );
                let unreadable = self
                    .unreadable
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .map(|e| format!(" (it sent a line that is not JSON-RPC: {e})"))
                    .unwrap_or_default();
                Err(GatewayError::upstream(
                    &self.name,
                    format_args!(
                        "did not answer within {} s{unreadable}",
                        self.timeout.as_secs_f64()
                    ),
                ))
            }
        }
    }

    /// Forwards a client notification (`notifications/cancelled` is remapped).
    pub fn notify(&self, session: &Session, mut message: Message) {
        let mut mux = self.mux();
        if message.method() == Some("notifications/cancelled") {
            let wanted = message.params().and_then(|p| p.get("requestId")).cloned();
            let found = mux
                .pending
                .iter()
                .find(|(_, p)| {
                    p.session.as_ref().is_some_and(|s| s.id == session.id)
                        && Some(&p.client_id) == wanted.as_ref()
                })
                .map(|(id, _)| *id);
            let Some(upstream_id) = found else {
                // The call has not reached the child yet (it may be waiting for its turn):
                // remember, so that it is never sent.
                if let Some(id) = wanted {
                    if mux.cancelled_early.len() == EARLY_CANCELLATIONS {
                        mux.cancelled_early.pop_front();
                    }
                    mux.cancelled_early.push_back((session.id.clone(), id));
                }
                return;
            };
            if let Some(p) = mux.pending.remove(&upstream_id) {
                if let Some(key) = p.progress_key {
                    mux.progress.remove(&key);
                }
                let _ = p.reply.send(Reply::Cancelled);
            }
            if let Some(params) = message.params_object_mut() {
                params.insert("requestId".into(), json!(upstream_id));
            }
        }
        self.write(&mux, message.as_map());
    }

    /// Forwards a client's answer to a child-to-client request, restoring the child's id.
    /// Returns false when no such request is pending for this session.
    pub fn answer(&self, session: &Session, mut message: Message) -> bool {
        let key = message.id().map(id_key).unwrap_or_default();
        let mut mux = self.mux();
        let Some(route) = mux.server_requests.remove(&key) else {
            return false;
        };
        if route.session_id != session.id {
            mux.server_requests.insert(key, route);
            return false;
        }
        message.set_id(route.upstream_id);
        self.write(&mux, message.as_map())
    }

    /// Handles one line from the child.
    fn on_line(&self, line: &[u8]) {
        let message = match serde_json::from_slice::<Value>(line)
            .map_err(|e| e.to_string())
            .and_then(|v| Message::from_value(v).map_err(|e| e.message))
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(server = %self.name, error = %e, "ignored a line that is not JSON-RPC");
                *self.unreadable.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return;
            }
        };
        match message.kind() {
            Kind::Response => self.on_response(message),
            Kind::Request => self.on_server_request(message),
            Kind::Notification => self.on_notification(message),
        }
    }

    /// A line longer than `max_line` was dropped. If it was the answer to a pending
    /// request (its id is near the start, as JSON-RPC answers have it), that request is
    /// answered with an error that says so at once; otherwise the reason waits for the
    /// timeout error of whichever request it was.
    fn on_too_long(&self, head: &[u8]) {
        let error = crate::http_upstream::too_large(&self.name, self.max_line);
        tracing::warn!(server = %self.name, "dropped a line: {}", error.message);
        *self.unreadable.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
            "longer than {} bytes, the most accepted ([servers.{}] max_message_bytes)",
            self.max_line, self.name
        ));
        let Some(id) = toolgate_mcp::stdio::id_in_head(head) else {
            return;
        };
        if let Some(p) = self.take_pending(id) {
            let _ = p.reply.send(Reply::Answer(error.to_jsonrpc(p.client_id)));
        }
    }

    /// Removes pending request `id` (with its progress token), if it is pending.
    fn take_pending(&self, id: u64) -> Option<Pending> {
        let mut mux = self.mux();
        let p = mux.pending.remove(&id);
        if let Some(key) = p.as_ref().and_then(|p| p.progress_key.clone()) {
            mux.progress.remove(&key);
        }
        p
    }

    fn on_response(&self, mut message: Message) {
        let Some(id) = message.id().and_then(Value::as_u64) else {
            return;
        };
        if let Some(p) = self.take_pending(id) {
            message.set_id(p.client_id);
            let _ = p.reply.send(Reply::Answer(message.into_value()));
        }
    }

    fn on_server_request(&self, message: Message) {
        let id = message.id().cloned().unwrap_or(Value::Null);
        let method = message.method().unwrap_or_default().to_owned();
        if method == "ping" {
            let mux = self.mux();
            self.write(&mux, &jsonrpc::result_response(id, json!({})));
            return;
        }
        let capability = match method.as_str() {
            "elicitation/create" => Some("elicitation"),
            "sampling/createMessage" => Some("sampling"),
            "roots/list" => Some("roots"),
            _ => None,
        };
        let mut mux = self.mux();
        let refusal = match related_session(&mux) {
            Related::Nobody => Some(format!(
                "no client of toolgate has a call in flight to answer {method}"
            )),
            Related::Ambiguous => Some(format!(
                "toolgate cannot tell which of several clients {method} is for"
            )),
            Related::Session(ref session, _) => capability
                .filter(|c| !session.has_capability(c))
                .map(|c| format!("the client did not declare the {c} capability")),
        };
        if let Some(reason) = refusal {
            self.write(
                &mux,
                &jsonrpc::error_response(id, codes::METHOD_NOT_FOUND, &reason, None),
            );
            return;
        }
        let Related::Session(session, stream) = related_session(&mux) else {
            return;
        };
        mux.next += 1;
        let client_id = format!("tg-{}", mux.next);
        mux.server_requests.insert(
            client_id.clone(),
            ServerRequestRoute {
                session_id: session.id.clone(),
                upstream_id: id,
            },
        );
        drop(mux);
        let mut message = message;
        message.set_id(json!(client_id));
        session.push(stream, &message.into_value());
    }

    fn on_notification(&self, mut message: Message) {
        match message.method() {
            Some("notifications/progress") => {
                let key = message
                    .params()
                    .and_then(|p| p.get("progressToken"))
                    .map(id_key)
                    .unwrap_or_default();
                let route = self
                    .mux()
                    .progress
                    .get(&key)
                    .map(|r| (Arc::clone(&r.session), r.client_token.clone(), r.stream));
                if let Some((session, token, stream)) = route {
                    if let Some(params) = message.params_object_mut() {
                        params.insert("progressToken".into(), token);
                    }
                    session.push(stream, &message.into_value());
                }
            }
            Some("notifications/cancelled") => {
                // The child gave up on one of its own requests to a client.
                let key = message.params().and_then(|p| p.get("requestId")).cloned();
                let mut mux = self.mux();
                let found = mux
                    .server_requests
                    .iter()
                    .find(|(_, r)| Some(&r.upstream_id) == key.as_ref())
                    .map(|(k, r)| (k.clone(), r.session_id.clone()));
                if let Some((client_id, session_id)) = found {
                    mux.server_requests.remove(&client_id);
                    drop(mux);
                    if let Some(params) = message.params_object_mut() {
                        params.insert("requestId".into(), json!(client_id));
                    }
                    if let Some(session) = self
                        .sessions
                        .on_server(&self.name)
                        .into_iter()
                        .find(|s| s.id == session_id)
                    {
                        session.push(None, &message.into_value());
                    }
                }
            }
            Some("notifications/message") => {
                // A log line may belong to a call; it must not reach another client.
                let related = related_session(&self.mux());
                let value = message.into_value();
                match related {
                    Related::Session(session, stream) => session.push(stream, &value),
                    Related::Nobody => {
                        for session in self.sessions.on_server(&self.name) {
                            session.push(None, &value);
                        }
                    }
                    Related::Ambiguous => tracing::debug!(
                        server = %self.name,
                        "dropped a log message that could belong to several clients"
                    ),
                }
            }
            method => {
                if method == Some("notifications/tools/list_changed") {
                    self.tools_changed.send_modify(|n| *n += 1);
                }
                let value = message.into_value();
                for session in self.sessions.on_server(&self.name) {
                    session.push(None, &value);
                }
            }
        }
    }
}

/// Which client a message from the child that carries no request id concerns.
enum Related {
    /// This session, on this stream (None: its GET stream).
    Session(Arc<Session>, Option<u64>),
    /// No client request is in flight: it concerns nobody in particular.
    Nobody,
    /// Requests of several sessions are in flight: it cannot be told.
    Ambiguous,
}

/// The session a child-originated message relates to: the session holding the child
/// exclusively, else the only session with requests in flight (its latest request's stream).
fn related_session(mux: &Mux) -> Related {
    let in_flight = || mux.pending.values().filter(|p| p.session.is_some());
    let owner = match &mux.turn {
        TurnState::Exclusive(id, _) => Some(id),
        _ => None,
    };
    let candidate = match owner {
        // The session holding the child caused it: no other session's call is running.
        Some(owner) => in_flight()
            .filter(|p| p.session.as_ref().is_some_and(|s| &s.id == owner))
            .max_by_key(|p| p.seq),
        None => {
            let mut sessions = in_flight().filter_map(|p| p.session.as_ref().map(|s| &s.id));
            let first = sessions.next();
            if first.is_some() && sessions.any(|s| Some(s) != first) {
                return Related::Ambiguous;
            }
            in_flight().max_by_key(|p| p.seq)
        }
    };
    match candidate {
        Some(p) => Related::Session(Arc::clone(p.session.as_ref().expect("filtered")), p.stream),
        None if in_flight().next().is_none() => Related::Nobody,
        None => Related::Ambiguous,
    }
}

/// A stable map key for an id or token of any JSON type.
fn id_key(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

impl StdioUpstream {
    /// The child's complete tool list (every page, each tool's definition), asked on the
    /// gateway's own behalf.
    pub async fn fetch_tools(&self) -> Result<Vec<Value>, GatewayError> {
        self.read_tools().await.complete()
    }

    /// [`StdioUpstream::fetch_tools`], keeping what was read when a page fails.
    pub async fn read_tools(&self) -> crate::catalogue::ToolList {
        crate::catalogue::read_tool_list(|params| self.request_own("tools/list", params)).await
    }
}
