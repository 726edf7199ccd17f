//! A stdio front end for a gateway: MCP over newline-delimited JSON-RPC on one side (a
//! desktop client that launched us), Streamable HTTP to a gateway's `/mcp/<server>` on the
//! other. `toolgate connect` runs it against a remote gateway; `toolgate stdio` runs a
//! gateway in-process on a private loopback port and runs it against that, so that a stdio
//! client gets the HTTP gateway's decisions, audit log and counters by construction.
//!
//! Each line from the client is POSTed as it comes. Requests run concurrently (a long tool
//! call does not hold up a `ping`); notifications and responses are sent in order, each
//! before the next line is read. Answers — a JSON body, or the events of an SSE stream,
//! including requests and notifications the server sends meanwhile — are written back one
//! message per line. Once a session exists its GET stream is opened and followed (resumed
//! with `Last-Event-ID` if it breaks), for what the server sends outside any request.
//!
//! When the client's input ends, the requests it made are answered, the session is deleted
//! and the bridge returns.
//!
//! A lost session (HTTP 404 on a message sent in one: the gateway restarted, the session
//! idled out) is recovered without the client noticing: the client's own `initialize` is
//! sent again, then the message. A failure on the HTTP side is answered to the client as a
//! JSON-RPC error for its request, naming what failed; nothing is dropped silently.

use crate::http_upstream::{build_client, innermost_cause as cause, HttpClient};
use crate::proxy::header_str;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use toolgate_mcp::sse::SseDecoder;
use toolgate_mcp::stdio::{Frame, LineFramer};
use toolgate_mcp::{codes, headers as mcp_headers};

/// Longest line read from the client, and largest SSE event read from the gateway.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// How long to wait before reopening a GET stream that ended.
const REOPEN_AFTER: Duration = Duration::from_secs(1);
/// How long the DELETE that ends the session may take when the client leaves.
const GOODBYE_WITHIN: Duration = Duration::from_secs(3);

/// Where the bridge sends what the client says.
#[derive(Debug, Clone)]
pub struct Target {
    /// The gateway's `/mcp/<server>` URL.
    pub url: String,
    /// The grant token sent as `Authorization: Bearer`.
    pub token: String,
    /// A CA file for a gateway behind a private CA (`https://`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// What the bridge knows of the conversation.
#[derive(Debug, Default)]
struct Conversation {
    /// The gateway's `Mcp-Session-Id`, once initialized.
    session: Option<String>,
    /// The protocol version the initialize result named, sent as `MCP-Protocol-Version`.
    version: Option<String>,
    /// The client's `initialize` request, sent again if the session is lost.
    initialize: Option<Value>,
    /// Bumped at every new session: the GET stream of an older one stops following it.
    generation: u64,
}

/// The HTTP side, shared by the tasks that send.
struct Link {
    client: HttpClient,
    uri: Uri,
    authorization: HeaderValue,
    conversation: Mutex<Conversation>,
    /// Lines for the client, written in order by one task.
    out: mpsc::UnboundedSender<Out>,
    /// Held while a lost session is being replaced, so that requests that met the loss
    /// together open one new session, not one each.
    recovering: tokio::sync::Mutex<()>,
}

/// What the writer task is given.
enum Out {
    /// A message, on one line.
    Line(Vec<u8>),
    /// Everything is written: stop.
    End,
}

/// An HTTP answer from the gateway.
struct Answer {
    status: StatusCode,
    /// Its `Mcp-Session-Id`.
    session: Option<String>,
    /// The whole JSON body; `None` for an event stream, passed on as it was read.
    json: Option<Bytes>,
    /// The whole body of a refusal (any content type).
    refusal: Bytes,
}

/// Runs the bridge until `input` ends: every line from it goes to `target`, every message
/// back is written to `output`. At the end the session is deleted (best effort).
pub async fn run<R, W>(target: Target, mut input: R, output: W) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let uri: Uri = target
        .url
        .parse()
        .map_err(|e| format!("{:?} is not a URL: {e}", target.url))?;
    let authorization = HeaderValue::from_str(&format!("Bearer {}", target.token))
        .map_err(|_| "the token holds characters a header cannot".to_owned())?;
    let (out, lines) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_lines(output, lines));
    let link = Arc::new(Link {
        client: build_client(target.ca_file.as_deref(), Duration::from_secs(10))?,
        uri,
        authorization,
        conversation: Mutex::new(Conversation::default()),
        out,
        recovering: tokio::sync::Mutex::new(()),
    });
    let mut framer = LineFramer::new(MAX_MESSAGE_BYTES);
    let mut buf = vec![0u8; 64 << 10];
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let n = input
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        let frames = if n == 0 {
            // A last line without its newline still counts.
            framer.push(b"\n")
        } else {
            framer.push(&buf[..n])
        };
        for frame in frames {
            match frame {
                Frame::Line(line) if line.iter().all(u8::is_ascii_whitespace) => {}
                Frame::Line(line) => {
                    let message = serde_json::from_slice::<Value>(&line).ok();
                    let is_request = message
                        .as_ref()
                        .is_some_and(|m| m.get("method").is_some() && m.get("id").is_some());
                    let link = Arc::clone(&link);
                    if is_request && !is_initialize(message.as_ref()) {
                        requests.spawn(async move { link.send(Bytes::from(line), message).await });
                    } else {
                        link.send(Bytes::from(line), message).await;
                    }
                }
                Frame::TooLong { .. } => link.write(&json!({"jsonrpc": "2.0", "id": null,
                    "error": {"code": codes::INVALID_REQUEST,
                              "message": format!("toolgate: a message longer than {MAX_MESSAGE_BYTES} bytes was discarded")}})),
            }
        }
        while requests.try_join_next().is_some() {}
        if n == 0 {
            break;
        }
    }
    // The client said all it will say: what it asked is answered before we leave.
    while requests.join_next().await.is_some() {}
    link.goodbye().await;
    let _ = link.out.send(Out::End);
    let _ = writer.await;
    Ok(())
}

/// Writes each line and a newline, flushing after each.
async fn write_lines<W: AsyncWrite + Unpin>(
    mut output: W,
    mut lines: mpsc::UnboundedReceiver<Out>,
) {
    while let Some(Out::Line(mut line)) = lines.recv().await {
        line.push(b'\n');
        if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
            return;
        }
    }
}

fn is_initialize(message: Option<&Value>) -> bool {
    message
        .and_then(|m| m.get("method"))
        .and_then(Value::as_str)
        == Some("initialize")
}

impl Link {
    /// Queues `message` for the client, on one line.
    fn write(&self, message: &Value) {
        let _ = self
            .out
            .send(Out::Line(serde_json::to_vec(message).unwrap_or_default()));
    }

    /// Queues a message from the gateway for the client: as it came when it is one line,
    /// re-encoded compactly when it spans several.
    fn pass_on(&self, bytes: &[u8]) {
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return;
        }
        if trimmed.contains(&b'\n') || trimmed.contains(&b'\r') {
            match serde_json::from_slice::<Value>(trimmed) {
                Ok(value) => self.write(&value),
                Err(e) => tracing::warn!("toolgate sent a message that is not JSON ({e}); dropped"),
            }
        } else {
            let _ = self.out.send(Out::Line(trimmed.to_vec()));
        }
    }

    /// Sends one message from the client and passes the answer on; a lost session is
    /// recovered once.
    async fn send(self: Arc<Self>, line: Bytes, message: Option<Value>) {
        let id = message
            .as_ref()
            .filter(|m| m.get("method").is_some())
            .and_then(|m| m.get("id").cloned());
        let initialize = is_initialize(message.as_ref());
        if initialize {
            self.conversation().initialize = message.clone();
        }
        let sent_in = self.conversation().session.clone();
        let mut answer = self.post(line.clone(), true, initialize).await;
        if sent_in.is_some()
            && matches!(&answer, Ok(a) if a.status == StatusCode::NOT_FOUND)
            && self.recover(sent_in.as_deref()).await
        {
            answer = self.post(line, true, initialize).await;
        }
        match answer {
            Ok(answer) if answer.status.is_success() => {
                if let Some(json) = &answer.json {
                    self.relay(json);
                }
                if initialize {
                    self.new_session(answer.session);
                }
            }
            Ok(answer) => self.refused(id, answer.status, &answer.refusal),
            Err(e) => match id {
                Some(id) => {
                    self.write(&json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": codes::INTERNAL_ERROR, "message": format!("toolgate: {e}")}}))
                }
                None => tracing::warn!("a message from the client was not delivered: {e}"),
            },
        }
    }

    fn conversation(&self) -> std::sync::MutexGuard<'_, Conversation> {
        self.conversation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request to the gateway with the conversation's headers.
    fn request(&self, method: Method, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(self.uri.clone())
            .body(Full::new(body))
            .expect("a request from a parsed URI");
        let headers = request.headers_mut();
        headers.insert(header::AUTHORIZATION, self.authorization.clone());
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(if method == Method::GET {
                "text/event-stream"
            } else {
                "application/json, text/event-stream"
            }),
        );
        if method == Method::POST {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let conversation = self.conversation();
        if let Some(v) = conversation
            .session
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert(mcp_headers::MCP_SESSION_ID, v);
        }
        if let Some(v) = conversation
            .version
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert(mcp_headers::MCP_PROTOCOL_VERSION, v);
        }
        request
    }

    /// POSTs `body`. An event stream is read to its end here (a request's stream ends with
    /// its response), each event passed on as it arrives when `pass_on`, so that progress
    /// and server requests reach the client in time; a JSON body is returned whole.
    /// `keep`: the body is an initialize answer, whose protocol version is noted (and the
    /// response of an event stream is returned too).
    async fn post(&self, body: Bytes, pass_on: bool, keep: bool) -> Result<Answer, String> {
        let request = self.request(Method::POST, body);
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach the gateway at {}: {}", self.uri, cause(&e)))?;
        let status = response.status();
        let content_type = header_str(response.headers(), header::CONTENT_TYPE.as_str())
            .unwrap_or_default()
            .to_owned();
        let session =
            header_str(response.headers(), mcp_headers::MCP_SESSION_ID).map(str::to_owned);
        if status.is_success() && content_type.starts_with("text/event-stream") {
            let mut last_response = None;
            self.follow(response.into_body(), None, &mut |data| {
                if pass_on {
                    self.pass_on(data.as_bytes());
                }
                if keep && is_response(data) {
                    last_response = Some(Bytes::from(data.to_owned()));
                }
            })
            .await;
            if let Some(response) = last_response.as_ref() {
                self.note_version(response);
            }
            return Ok(Answer {
                status,
                session,
                // Passed on already when `pass_on` (only its version was wanted).
                json: last_response.filter(|_| !pass_on),
                refusal: Bytes::new(),
            });
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("the gateway's answer broke off: {e}"))?
            .to_bytes();
        let json = content_type.starts_with("application/json") && status.is_success();
        if json && keep {
            self.note_version(&body);
        }
        Ok(Answer {
            status,
            session,
            json: json.then(|| body.clone()),
            refusal: if json { Bytes::new() } else { body },
        })
    }

    /// Gives each event's data of an SSE body to `each` as it arrives; the last event id
    /// seen.
    async fn follow(
        &self,
        mut body: hyper::body::Incoming,
        mut last: Option<String>,
        each: &mut (dyn FnMut(&str) + Send),
    ) -> Option<String> {
        let mut decoder = SseDecoder::new(MAX_MESSAGE_BYTES);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Some(chunk) = frame.data_ref() else {
                continue;
            };
            match decoder.push(chunk) {
                Ok(events) => {
                    for event in events {
                        if event.id.is_some() {
                            last.clone_from(&event.id);
                        }
                        each(&event.data);
                    }
                }
                Err(e) => {
                    tracing::warn!("the gateway's event stream broke a limit: {e}");
                    break;
                }
            }
        }
        last
    }

    /// Passes on a JSON answer: one message, or a batch's answers one per line.
    fn relay(&self, body: &Bytes) {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(answers)) => answers.iter().for_each(|a| self.write(a)),
            _ => self.pass_on(body),
        }
    }

    /// Takes the protocol version from an initialize result: sent as
    /// `MCP-Protocol-Version` from then on.
    fn note_version(&self, answer: &[u8]) {
        if let Some(version) = serde_json::from_slice::<Value>(answer).ok().and_then(|a| {
            a.pointer("/result/protocolVersion")?
                .as_str()
                .map(str::to_owned)
        }) {
            self.conversation().version = Some(version);
        }
    }

    /// Records a new session and opens its GET stream.
    fn new_session(self: &Arc<Self>, session: Option<String>) {
        let generation = {
            let mut conversation = self.conversation();
            conversation.session = session.clone();
            conversation.generation += 1;
            conversation.generation
        };
        if session.is_some() {
            tokio::spawn(Arc::clone(self).listen(generation));
        }
    }

    /// Follows the session's GET stream while the session is `generation`, reopening it
    /// when it ends; stops if the gateway has none (405) or the session ended (404).
    async fn listen(self: Arc<Self>, generation: u64) {
        let mut last: Option<String> = None;
        while self.conversation().generation == generation {
            let mut request = self.request(Method::GET, Bytes::new());
            if let Some(v) = last.as_deref().and_then(|s| HeaderValue::from_str(s).ok()) {
                request.headers_mut().insert(mcp_headers::LAST_EVENT_ID, v);
            }
            match self.client.request(request).await {
                Ok(r) if r.status().is_success() => {
                    last = self
                        .follow(r.into_body(), last, &mut |data| {
                            self.pass_on(data.as_bytes())
                        })
                        .await;
                }
                Ok(r)
                    if matches!(
                        r.status(),
                        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_FOUND
                    ) =>
                {
                    return
                }
                Ok(r) => tracing::warn!(
                    status = r.status().as_u16(),
                    "the gateway refused the GET stream"
                ),
                Err(e) => tracing::warn!("the GET stream could not be opened: {}", cause(&e)),
            }
            tokio::time::sleep(REOPEN_AFTER).await;
        }
    }

    /// After a 404 on a message sent in session `lost`: whether a session is there to send
    /// it in again — opened here, or by another request that met the loss first.
    async fn recover(self: &Arc<Self>, lost: Option<&str>) -> bool {
        let _one_at_a_time = self.recovering.lock().await;
        if self.conversation().session.as_deref() != lost {
            return self.conversation().session.is_some();
        }
        self.reinitialize().await
    }

    /// Opens a new session with the client's own `initialize`: whether it worked. Its
    /// answer is not passed on: the client has had one.
    async fn reinitialize(self: &Arc<Self>) -> bool {
        let Some(mut initialize) = self.conversation().initialize.clone() else {
            return false;
        };
        initialize["id"] = json!("toolgate-reinitialize");
        {
            let mut conversation = self.conversation();
            conversation.session = None;
            conversation.version = None;
        }
        let body = Bytes::from(serde_json::to_vec(&initialize).unwrap_or_default());
        match self.post(body, false, true).await {
            Ok(answer) if answer.status.is_success() && answer.session.is_some() => {
                self.new_session(answer.session);
            }
            _ => return false,
        }
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let sent = self
            .post(Bytes::from(initialized.to_string()), false, false)
            .await;
        tracing::info!("the gateway had lost the session: initialized again");
        sent.is_ok_and(|a| a.status.is_success())
    }

    /// Answers a request the gateway refused at the HTTP level (401, 403, 404, 400…) with a
    /// JSON-RPC error naming the status and the gateway's reason.
    fn refused(&self, id: Option<Value>, status: StatusCode, body: &Bytes) {
        let error = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|b| b.get("error").cloned())
            .unwrap_or(Value::Null);
        let reason = error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        let code = error
            .get("code")
            .and_then(Value::as_i64)
            .unwrap_or(codes::INTERNAL_ERROR);
        let message = format!(
            "toolgate refused the request (HTTP {}): {reason}",
            status.as_u16()
        );
        match id {
            Some(id) => self.write(
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
            ),
            None => tracing::warn!("{message}"),
        }
    }

    /// Ends the session at the gateway.
    async fn goodbye(&self) {
        if self.conversation().session.is_none() {
            return;
        }
        let request = self.request(Method::DELETE, Bytes::new());
        let _ = tokio::time::timeout(GOODBYE_WITHIN, self.client.request(request)).await;
        self.conversation().generation += 1;
    }
}

/// Whether an event's data is a JSON-RPC response (not a request or notification).
fn is_response(data: &str) -> bool {
    serde_json::from_str::<Value>(data).is_ok_and(|m| {
        m.get("method").is_none() && (m.get("result").is_some() || m.get("error").is_some())
    })
}
