//! The gateway binary against raw HTTP/1.1 bytes: every kind of bad input gets a clear,
//! specific answer, and the gateway keeps serving normal clients afterwards.
//!
//! The upstream is the bundled SendIt example server over stdio, so these tests need nothing
//! beyond the workspace's own binaries.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "tg_raw_http_test_token";
const OTHER_TOKEN: &str = "tg_raw_http_other_grant";

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_toolgate"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// A running gateway process, killed on drop.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    /// The scratch directory holding config, policy and data dir (shared across restarts).
    dir: std::rc::Rc<TempDir>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "toolgate-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "hide": ["delete_*"],
  "tools": {
    "list_contacts": {},
    "create_payment": {
      "deny_if": [{"path": "args.amount", "op": "gt", "value": 100, "on_deny": "too much"}]
    }
  }
}"#;

fn start_gateway(extra_config: &str) -> Gateway {
    start_gateway_in(std::rc::Rc::new(TempDir::new("raw")), extra_config)
}

/// `toolgate serve --config DIR/toolgate.toml`, its stdout piped (the url line).
fn serve(dir: &TempDir) -> Child {
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["serve", "--config"])
        .arg(dir.0.join("toolgate.toml"))
        .env("SENDIT_QUIET", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.0.join("gateway.log")).expect("gateway log"))
        .spawn()
        .expect("start toolgate")
}

/// Starts a gateway whose config, policy and data dir live in `dir`.
fn start_gateway_in(dir: std::rc::Rc<TempDir>, extra_config: &str) -> Gateway {
    start_gateway_with(dir, "", extra_config)
}

/// [`start_gateway_in`], with `gateway_keys` added to the `[gateway]` section.
fn start_gateway_with(
    dir: std::rc::Rc<TempDir>,
    gateway_keys: &str,
    extra_config: &str,
) -> Gateway {
    std::fs::write(dir.0.join("policy.json"), POLICY).unwrap();
    let sendit = bin_dir().join("sendit-example");
    assert!(
        sendit.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        sendit.display()
    );
    let config = format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
max_body_bytes = 65536
max_header_bytes = 16384
{gateway_keys}

[servers.sendit]
command = "{}"
timeout = "10s"

[servers.down]
url = "http://127.0.0.1:9/mcp"
timeout = "3s"

[[grants]]
name = "tester"
token_sha256 = "{}"
policies = {{ sendit = "policy.json", down = "policy.json" }}

[[grants]]
name = "other"
token = "{OTHER_TOKEN}"
policies = {{ sendit = "policy.json" }}
{extra_config}
"#,
        sendit.display(),
        sha256_hex(TOKEN)
    );
    std::fs::write(dir.0.join("toolgate.toml"), config).unwrap();
    let mut child = serve(&dir);
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a url line").unwrap();
    let url = first.strip_prefix("url: http://").expect("url line");
    let addr: SocketAddr = url.split('/').next().unwrap().parse().unwrap();
    std::thread::spawn(move || for _ in lines {});
    let gateway = Gateway { child, addr, dir };
    wait_ready(gateway.addr);
    gateway
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn wait_ready(addr: SocketAddr) {
    for _ in 0..200 {
        if let Ok(r) = try_request(
            addr,
            "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".as_bytes(),
        ) {
            if r.status == 200 {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gateway at {addr} never became ready");
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        let text = self.body.trim();
        // SSE bodies carry the JSON on a data: line.
        let text = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or(text);
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn try_request(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(raw)?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut head_lines = head.lines();
    let status_line = head_lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = head_lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        text = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// POSTs `body` to `/mcp/<server>` with the given extra header lines.
fn post(addr: SocketAddr, server: &str, extra: &[&str], body: &str) -> Reply {
    let mut raw = format!(
        "POST /mcp/{server} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        addr.port(),
        body.len()
    );
    for line in extra {
        raw.push_str(line);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    try_request(addr, raw.as_bytes()).expect("request")
}

fn auth() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

fn initialize(addr: SocketAddr, server: &str, version: &str) -> String {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name":"raw","version":"0"}}});
    let reply = post(addr, server, &[&auth()], &body.to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["result"]["protocolVersion"], version);
    reply
        .header("mcp-session-id")
        .expect("session id")
        .to_owned()
}

fn call(addr: SocketAddr, session: &str, id: u64, tool: &str, args: Value) -> Reply {
    let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}});
    post(
        addr,
        "sendit",
        &[
            &auth(),
            &format!("Mcp-Session-Id: {session}"),
            "MCP-Protocol-Version: 2025-06-18",
        ],
        &body.to_string(),
    )
}

#[test]
fn bad_input_gets_specific_errors_and_the_gateway_keeps_serving() {
    let gw = start_gateway("");
    let addr = gw.addr;
    let session = initialize(addr, "sendit", "2025-06-18");
    let with_session = |extra: &[&str], body: &str| {
        let mut headers = vec![auth(), format!("Mcp-Session-Id: {session}")];
        headers.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        post(addr, "sendit", &refs, body)
    };

    // Malformed JSON: 400 with a JSON-RPC parse error.
    let r = with_session(&[], "{\"jsonrpc\":");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32700);

    // Duplicate keys could make gateway and server see different arguments: refused.
    let r = with_session(
        &[],
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"create_payment","arguments":{"amount":1,"amount":100000}}}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32600);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("duplicate"));

    // Not a JSON-RPC object.
    let r = with_session(&[], r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32600);

    // Batches are forbidden after 2025-03-26.
    let r = with_session(
        &[],
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("batches"));

    // Wrong content type.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let raw = format!(
        "POST /mcp/sendit HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\nMcp-Session-Id: {session}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        auth(),
        body.len()
    );
    assert_eq!(try_request(addr, raw.as_bytes()).unwrap().status, 415);

    // Oversized body: 413 naming the limit.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"list_contacts","arguments":{{"pad":"{}"}}}}}}"#,
        "x".repeat(70_000)
    );
    let r = with_session(&[], &big);
    assert_eq!(r.status, 413);
    assert!(r.body.contains("65536"), "{}", r.body);

    // Oversized header: 431.
    let huge = format!("X-Pad: {}", "y".repeat(20_000));
    let r = with_session(&[&huge], body);
    assert_eq!(r.status, 431);

    // Missing and unknown sessions.
    let r = post(addr, "sendit", &[&auth()], body);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Mcp-Session-Id"));
    let r = post(addr, "sendit", &[&auth(), "Mcp-Session-Id: tgs-nope"], body);
    assert_eq!(r.status, 404);
    // Another grant cannot use this session, nor learn that it exists.
    let other = format!("Authorization: Bearer {OTHER_TOKEN}");
    let r = post(
        addr,
        "sendit",
        &[&other, &format!("Mcp-Session-Id: {session}")],
        body,
    );
    assert_eq!(r.status, 404);

    // Unknown server, wrong method.
    assert_eq!(post(addr, "nowhere", &[&auth()], body).status, 404);
    let raw = format!(
        "PUT /mcp/sendit HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        auth()
    );
    assert_eq!(try_request(addr, raw.as_bytes()).unwrap().status, 405);

    // Tokens.
    let r = post(addr, "sendit", &[], body);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        post(addr, "sendit", &["Authorization: Bearer tg_wrong"], body).status,
        401
    );

    // DNS rebinding protection: foreign Host or Origin, whatever the port.
    let raw = format!(
        "POST /mcp/sendit HTTP/1.1\r\nHost: evil.example:{}\r\n{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        addr.port(),
        auth(),
        body.len()
    );
    assert_eq!(try_request(addr, raw.as_bytes()).unwrap().status, 403);
    assert_eq!(
        with_session(&["Origin: http://evil.example"], body).status,
        403
    );
    assert_eq!(
        with_session(&["Origin: http://localhost:3000"], body).status,
        200
    );

    // A 2026-07-28 request must carry its envelope in params._meta; a revision of neither
    // era is refused with the list of those served.
    let r = with_session(&["MCP-Protocol-Version: 2026-07-28"], body);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32602);
    let r = with_session(&["MCP-Protocol-Version: 2024-01-01"], body);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32022);
    assert_eq!(r.json()["error"]["data"]["supported"][0], "2025-11-25");
    let r = post(
        addr,
        "sendit",
        &[&auth()],
        r#"{"jsonrpc":"2.0","id":9,"method":"server/discover","params":{}}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32602);

    // Malformed tools/call params: -32602 from the gateway, nothing forwarded.
    let r = with_session(
        &[],
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"arguments":{}}}"#,
    );
    assert_eq!(r.json()["error"]["code"], -32602);

    // After all of that, the same session still works.
    let r = call(addr, &session, 10, "list_contacts", json!({}));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(
        v["result"]["isError"].is_null() || v["result"]["isError"] == false,
        "{v}"
    );
    assert_eq!(v["id"], 10);
}

#[test]
fn decisions_and_hidden_tools_over_raw_http() {
    let gw = start_gateway("");
    let addr = gw.addr;
    let session = initialize(addr, "sendit", "2025-06-18");

    let v = call(
        addr,
        &session,
        2,
        "create_payment",
        json!({"amount": 500, "currency": "USD", "recipient": "a@example.com"}),
    )
    .json();
    assert_eq!(v["id"], 2);
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(
        v["result"]["content"][0]["text"],
        "[POLICY DENIED] too much"
    );
    assert_eq!(
        v["result"]["_meta"]["toolgate/decision"]["rule"],
        "/tools/create_payment/deny_if/args.amount-gt"
    );

    let v = call(addr, &session, 3, "schedule_job", json!({"command": "ls"})).json();
    assert_eq!(
        v["result"]["_meta"]["toolgate/decision"]["rule"],
        "(default deny)"
    );
    assert_eq!(
        v["result"]["content"][0]["text"],
        "[POLICY DENIED] Tool \"schedule_job\" is not permitted by policy"
    );

    // Hidden and non-existent tools are indistinguishable.
    let hidden = call(addr, &session, 4, "delete_contact", json!({"id": "c1"})).json();
    let absent = call(addr, &session, 4, "no_such_tool", json!({})).json();
    assert_eq!(hidden["error"]["code"], -32602);
    assert_eq!(hidden["error"]["message"], "Unknown tool: delete_contact");
    assert_eq!(absent["error"]["message"], "Unknown tool: no_such_tool");

    // tools/list drops hidden tools.
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    let r = post(
        addr,
        "sendit",
        &[&auth(), &format!("Mcp-Session-Id: {session}")],
        body,
    );
    let names: Vec<String> = r.json()["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"list_contacts".to_owned()), "{names:?}");
    assert!(
        names.contains(&"schedule_job".to_owned()),
        "denied tools stay listed: {names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("delete_")), "{names:?}");

    // Notifications are accepted with 202.
    let r = post(
        addr,
        "sendit",
        &[&auth(), &format!("Mcp-Session-Id: {session}")],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(r.status, 202);

    // DELETE ends the session.
    let raw = format!(
        "DELETE /mcp/sendit HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\nMcp-Session-Id: {session}\r\nConnection: close\r\n\r\n",
        auth()
    );
    assert_eq!(try_request(addr, raw.as_bytes()).unwrap().status, 200);
    assert_eq!(
        call(addr, &session, 8, "list_contacts", json!({})).status,
        404
    );
}

#[test]
fn batches_on_2025_03_26_mix_gateway_answers_and_upstream_answers() {
    let gw = start_gateway("");
    let addr = gw.addr;
    let session = initialize(addr, "sendit", "2025-03-26");
    let batch = json!([
        {"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"list_contacts","arguments":{}}},
        {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"create_payment","arguments":{"amount":1000}}},
        {"jsonrpc":"2.0","id":"c","method":"tools/call","params":{"name":"delete_contact","arguments":{}}},
    ]);
    let r = post(
        addr,
        "sendit",
        &[&auth(), &format!("Mcp-Session-Id: {session}")],
        &batch.to_string(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let answers = r.json();
    let answers = answers.as_array().expect("a batch answer is an array");
    assert_eq!(answers.len(), 3);
    let by_id = |id: &str| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer for {id}: {answers:?}"))
    };
    assert!(by_id("a")["result"]["content"].is_array());
    assert_ne!(by_id("a")["result"]["isError"], true);
    assert_eq!(by_id("b")["result"]["isError"], true);
    assert_eq!(by_id("c")["error"]["code"], -32602);
}

#[test]
fn an_unreachable_upstream_is_a_jsonrpc_error_naming_the_server() {
    let gw = start_gateway("");
    let body = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name":"raw","version":"0"}}});
    let started = std::time::Instant::now();
    let r = post(gw.addr, "down", &[&auth()], &body.to_string());
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["id"], 1);
    assert_eq!(v["error"]["code"], -32603);
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"down\""), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    // The other server is unaffected.
    initialize(gw.addr, "sendit", "2025-11-25");
}

#[test]
fn a_broken_policy_or_config_stops_start_up_with_every_reason() {
    let dir = TempDir::new("badcfg");
    std::fs::write(
        dir.0.join("bad.json"),
        r#"{"version":"1","default":"maybe","tools":{"t":{"deny_if":[{"path":"args.a","op":"greater","value":1}]}}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.0.join("toolgate.toml"),
        "[servers.a]\ncommand = \"true\"\n[[grants]]\nname = \"g\"\ntoken = \"t\"\npolicies = { a = \"bad.json\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["serve", "--config"])
        .arg(dir.0.join("toolgate.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json: /default"), "{err}");
    assert!(err.contains("/tools/t/deny_if/0/op"), "{err}");

    std::fs::write(
        dir.0.join("typo.toml"),
        "[gateway]\nlisten = \"127.0.0.1:0\"\nlisten_port = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["serve", "--config"])
        .arg(dir.0.join("typo.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("typo.toml") && err.contains("gateway") && err.contains("listen_port"),
        "{err}"
    );
}

#[test]
fn policy_check_reports_json_pointers() {
    let dir = TempDir::new("check");
    let good = dir.0.join("good.json");
    std::fs::write(&good, POLICY).unwrap();
    let bad = dir.0.join("bad.json");
    std::fs::write(&bad, r#"{"version":"1","default":"deny","tools":{"x":{"require":[{"path":"args.a","op":"greater","value":1}]}}}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["policy", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["policy", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/tools/x/require/0/op"), "{text}");
    assert!(text.contains("greater"), "{text}");
}

#[test]
fn quick_mode_prints_url_and_a_fresh_token() {
    let dir = TempDir::new("quick");
    std::fs::write(dir.0.join("p.json"), POLICY).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .current_dir(&dir.0)
        .args(["serve", "--listen", "127.0.0.1:0", "--policy"])
        .arg(dir.0.join("p.json"))
        .arg("--")
        .arg(bin_dir().join("sendit-example"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap();
    let token = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        url.starts_with("url: http://127.0.0.1:") && url.ends_with("/mcp/default"),
        "{url}"
    );
    let token = token.strip_prefix("token: tg_").expect("token line");
    assert_eq!(token.len(), 43, "32 random bytes in base64url: {token}");
}

#[test]
fn sessions_survive_a_gateway_restart() {
    let first = start_gateway("");
    let session = initialize(first.addr, "sendit", "2025-06-18");
    assert_eq!(
        call(first.addr, &session, 1, "list_contacts", json!({})).status,
        200
    );
    let dir = std::rc::Rc::clone(&first.dir);
    drop(first); // killed: nothing is flushed at shutdown, the session was stored at initialize
    let second = start_gateway_in(dir, "");
    let r = call(second.addr, &session, 2, "list_contacts", json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["id"], 2);
    assert!(r.json()["result"]["content"].is_array(), "{:?}", r.body);
    assert!(second.dir.0.join(".toolgate/toolgate.db").exists());
}

const CUT_TOKEN: &str = "tg_raw_http_cut_grant";

/// A faulty HTTP MCP upstream: it answers `initialize` and `tools/list` properly, and each
/// of its tools fails in its own way — `list_contacts` breaks off its answer (a head
/// promising 500 bytes, a few of them, the connection closed), `garbage` answers 200 with
/// a body that is not JSON, `reset` closes the connection without answering.
fn start_breaking_upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve_breaking(stream));
        }
    });
    addr
}

fn serve_breaking(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let result = match message["method"].as_str() {
            _ if request_line.starts_with("DELETE") => None,
            Some("initialize") => Some(json!({"protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}}, "serverInfo": {"name": "cut", "version": "0"}})),
            Some("tools/list") => Some(json!({"tools": [
                {"name": "list_contacts", "inputSchema": {"type": "object"}},
                {"name": "garbage", "inputSchema": {"type": "object"}},
                {"name": "reset", "inputSchema": {"type": "object"}}]})),
            Some("tools/call") if message["params"]["name"] == "garbage" => {
                let page = "<html><body>502 Bad Gateway (nginx)</body></html>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{page}",
                    page.len()
                );
                continue;
            }
            Some("tools/call") if message["params"]["name"] == "reset" => return,
            Some("tools/call") => {
                let cut = "{\"jsonrpc\":\"2.0\",\"id\":";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{cut}"
                );
                return; // dropped: the answer ends 480-odd bytes short
            }
            _ => {
                let _ = stream.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
                continue;
            }
        };
        let text = result
            .map(|r| json!({"jsonrpc": "2.0", "id": message["id"], "result": r}).to_string())
            .unwrap_or_default();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: cut-session\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
    }
}

#[test]
fn connections_beyond_max_connections_get_a_503_naming_the_setting() {
    let gw = start_gateway_with(
        std::rc::Rc::new(TempDir::new("conns")),
        "max_connections = 3",
        "",
    );
    let ready = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    // Three idle connections (within the header-read timeout) take every place.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(gw.addr).expect("connect"))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let reply = try_request(gw.addr, ready).expect("an answer, not a reset");
        if reply.status == 503 || std::time::Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(
        refused.body.contains("3 client connections are open")
            && refused.body.contains("[gateway] max_connections"),
        "{refused:?}"
    );
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    // Once they close, the gateway serves again.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = try_request(gw.addr, ready).expect("an answer");
        if reply.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused after the held connections closed: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hundreds_of_slow_clients_neither_stop_a_normal_one_nor_stay_past_the_header_timeout() {
    let gw = start_gateway_with(
        std::rc::Rc::new(TempDir::new("slow")),
        "header_read_timeout = \"2s\"",
        "",
    );
    // Slowloris: 300 connections that start a request head and never finish it.
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = TcpStream::connect(gw.addr).expect("connect");
            stream
                .write_all(b"POST /mcp/sendit HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .expect("write");
            stream
        })
        .collect();
    let started = std::time::Instant::now();
    let reply = try_request(
        gw.addr,
        b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .expect("served");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a normal client waited {:?} behind slow ones",
        started.elapsed()
    );
    // Past the header-read timeout the gateway has closed every slow connection.
    std::thread::sleep(Duration::from_millis(2500));
    for (i, stream) in slow.iter_mut().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("slow connection {i} still open past the timeout: {e}"),
        }
    }
}

#[test]
fn without_a_listen_address_the_gateway_binds_to_loopback_only() {
    let dir = TempDir::new("loopback");
    std::fs::write(dir.0.join("policy.json"), POLICY).unwrap();
    std::fs::write(
        dir.0.join("toolgate.toml"),
        format!(
            "[servers.sendit]\ncommand = \"{}\"\n\n[[grants]]\nname = \"g\"\ntoken = \"{TOKEN}\"\npolicies = {{ sendit = \"policy.json\" }}\n",
            bin_dir().join("sendit-example").display()
        ),
    )
    .unwrap();
    let mut child = serve(&dir);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    // The listening socket itself, as the kernel lists it: 127.0.0.1:8080, not 0.0.0.0.
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let sockets: Vec<&str> = listening
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(3) == Some(&"0A") && fields[1].ends_with(":1F90")).then_some(fields[1])
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("url: http://127.0.0.1:8080/"),
        "announced {first:?} (is port 8080 free on this machine?)"
    );
    assert_eq!(
        sockets,
        vec!["0100007F:1F90"],
        "listening sockets on port 8080"
    );
}

#[test]
fn an_upstream_breaking_off_sending_garbage_or_resetting_is_a_jsonrpc_error_naming_the_server() {
    let upstream = start_breaking_upstream();
    let dir = std::rc::Rc::new(TempDir::new("faulty"));
    std::fs::write(
        dir.0.join("allow.json"),
        r#"{"version": "1", "default": "allow"}"#,
    )
    .unwrap();
    let gw = start_gateway_with(
        dir,
        "",
        &format!(
            "\n[servers.faulty]\nurl = \"http://{upstream}/mcp\"\ntimeout = \"5s\"\n\n\
             [[grants]]\nname = \"cutter\"\ntoken = \"{CUT_TOKEN}\"\npolicies = {{ faulty = \"allow.json\" }}\n"
        ),
    );
    let bearer = format!("Authorization: Bearer {CUT_TOKEN}");
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name":"raw","version":"0"}}});
    let reply = post(gw.addr, "faulty", &[&bearer], &init.to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    let session = reply
        .header("mcp-session-id")
        .expect("session id")
        .to_owned();
    // A whole answer the client can read, never a cut connection or the upstream's bytes:
    // the call's own id and an error that says which server did what, call after call.
    for (id, tool, says) in [
        (7, "list_contacts", "broke off its answer"),
        (8, "garbage", "sent an answer that is not JSON-RPC"),
        (9, "reset", "is unreachable"),
        (10, "list_contacts", "broke off its answer"),
        (11, "garbage", "sent an answer that is not JSON-RPC"),
    ] {
        let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
                          "params":{"name":tool,"arguments":{}}});
        let reply = post(
            gw.addr,
            "faulty",
            &[
                &bearer,
                &format!("Mcp-Session-Id: {session}"),
                "MCP-Protocol-Version: 2025-06-18",
            ],
            &body.to_string(),
        );
        assert_eq!(reply.status, 200, "{tool}: {reply:?}");
        let answer = reply.json();
        assert_eq!(answer["id"], id, "{tool}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("\"faulty\"") && message.contains(says),
            "{tool}: {answer}"
        );
    }
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// One hostile request: its bytes, what kind it is, and the answers allowed for it.
struct Hostile {
    kind: &'static str,
    raw: Vec<u8>,
    /// Close our side after sending (a body shorter than its Content-Length).
    half_close: bool,
    /// Status codes the gateway may answer with; 0 stands for "closed without an answer".
    allowed: &'static [u16],
}

fn hostile(rng: &mut Rng, port: u16, session: &str) -> Hostile {
    let request = |content_type: &str, extra: &str, body: &[u8]| {
        let mut raw = format!(
            "POST /mcp/sendit HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\nMcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Type: {content_type}\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        raw
    };
    let call_with = |arguments: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"list_contacts","arguments":{arguments}}}}}"#
        )
    };
    let valid = call_with(r#"{"q":"ann","limit":5}"#);
    match rng.below(11) {
        0 => {
            let len = rng.below(2000);
            let body = rng.bytes(len);
            Hostile {
                kind: "random body",
                raw: request("application/json", "", &body),
                half_close: false,
                allowed: &[400],
            }
        }
        1 => {
            let cut = rng.below(valid.len());
            Hostile {
                kind: "truncated body",
                raw: request("application/json", "", &valid.as_bytes()[..cut]),
                half_close: false,
                allowed: &[400],
            }
        }
        2 => {
            // Content-Length promises more than comes; the client then stops sending.
            let mut raw = request("application/json", "", valid.as_bytes());
            let cut = raw.len() - 1 - rng.below(valid.len() - 1);
            raw.truncate(cut);
            Hostile {
                kind: "body shorter than its length",
                raw,
                half_close: true,
                allowed: &[400, 0],
            }
        }
        3 => {
            const TYPES: &[&str] = &[
                "text/plain",
                "application/xml",
                "multipart/form-data; boundary=x",
                "application/x-www-form-urlencoded",
                "json",
                "*/*",
            ];
            let content_type = TYPES[rng.below(TYPES.len())];
            Hostile {
                kind: "wrong content type",
                raw: request(content_type, "", valid.as_bytes()),
                half_close: false,
                allowed: &[415],
            }
        }
        4 => {
            let huge = if rng.below(2) == 0 {
                format!("X-Huge: {}\r\n", "a".repeat(20_000 + rng.below(80_000)))
            } else {
                (0..600)
                    .map(|i| format!("X-Many-{i}: {}\r\n", "b".repeat(30)))
                    .collect()
            };
            Hostile {
                kind: "huge headers",
                raw: request("application/json", &huge, valid.as_bytes()),
                half_close: false,
                allowed: &[431],
            }
        }
        5 => {
            let depth = [200, 1_000, 10_000, 30_000][rng.below(4)];
            let arguments = format!(r#"{{"q":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
            Hostile {
                kind: "deep nesting",
                raw: request("application/json", "", call_with(&arguments).as_bytes()),
                half_close: false,
                allowed: &[400],
            }
        }
        6 => {
            let arguments = match rng.below(3) {
                0 => r#"{"q":"a","q":"b"}"#.to_owned(),
                1 => format!(r#"{{"q":{{"x":{{"deep":1,"deep":{}}}}}}}"#, rng.below(100)),
                _ => r#"{"q":[{"k":1},{"k":1,"k":2}]}"#.to_owned(),
            };
            Hostile {
                kind: "duplicate keys",
                raw: request("application/json", "", call_with(&arguments).as_bytes()),
                half_close: false,
                allowed: &[400],
            }
        }
        7 => {
            let mut body = call_with(r#"{"q":"@@@@"}"#).into_bytes();
            let at = body.windows(4).position(|w| w == b"@@@@").expect("marker");
            let bad: &[&[u8]] = &[
                b"\xff\xfe",
                b"\xc3\x28",
                b"\xed\xa0\x80",
                b"\xf0\x28\x8c\x28",
            ];
            body.splice(at..at + 4, bad[rng.below(bad.len())].iter().copied());
            Hostile {
                kind: "invalid UTF-8",
                raw: request("application/json", "", &body),
                half_close: false,
                allowed: &[400],
            }
        }
        8 => {
            let len = 1 + rng.below(3000);
            Hostile {
                kind: "not HTTP at all",
                raw: rng.bytes(len),
                half_close: true,
                allowed: &[400, 0],
            }
        }
        9 => {
            let raw = format!(
                "POST /mcp/sendit HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\nMcp-Session-Id: {session}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}\r\n{valid}\r\n0\r\n\r\n",
                ["zz", "-5", "ffffffffffffffffffff", "1;ext=\u{0}"][rng.below(4)]
            );
            Hostile {
                kind: "bad chunked encoding",
                raw: raw.into_bytes(),
                half_close: true,
                allowed: &[400, 0],
            }
        }
        _ => {
            let raw = format!(
                "POST /mcp/sendit HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\nMcp-Session-Id: {session}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{valid}",
                1u64 << (40 + rng.below(20))
            );
            Hostile {
                kind: "absurd Content-Length",
                raw: raw.into_bytes(),
                half_close: true,
                allowed: &[413],
            }
        }
    }
}

/// Sends `raw` and reads whatever comes back (status 0: the gateway closed without answering).
fn send_hostile(addr: SocketAddr, h: &Hostile) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The gateway may answer (413, 431) and close before it has read everything.
    let _ = stream.write_all(&h.raw);
    if h.half_close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

#[test]
fn a_storm_of_hostile_requests_gets_clear_refusals_and_a_normal_client_is_still_served() {
    let gw = start_gateway("");
    let addr = gw.addr;
    let session = initialize(addr, "sendit", "2025-06-18");
    let seed: u64 = std::env::var("TOOLGATE_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7001_6a7e);
    eprintln!("hostile storm seed {seed} (TOOLGATE_STRESS_SEED replays it)");

    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let session = session.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed.wrapping_add(t).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
                for n in 0..250 {
                    let h = hostile(&mut rng, addr.port(), &session);
                    let reply = send_hostile(addr, &h);
                    assert!(
                        h.allowed.contains(&reply.status),
                        "thread {t} request {n} ({}): status {} not in {:?}; body {:?}",
                        h.kind,
                        reply.status,
                        h.allowed,
                        reply.body
                    );
                    // A JSON-RPC refusal says what was wrong.
                    if reply.status == 400 && reply.body.trim_start().starts_with('{') {
                        let v = reply.json();
                        let message = v["error"]["message"].as_str().unwrap_or_default();
                        assert!(
                            !message.is_empty(),
                            "{} refused without a reason: {v}",
                            h.kind
                        );
                    }
                    *kinds.entry(h.kind).or_default() += 1;
                }
                kinds
            })
        })
        .collect();
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for thread in threads {
        for (kind, n) in thread.join().expect("a storm thread failed") {
            *kinds.entry(kind).or_default() += n;
        }
    }
    assert_eq!(
        kinds.len(),
        11,
        "every kind of hostile request was sent: {kinds:?}"
    );

    // The gateway is still there, and serves a normal client correctly.
    let mut gw = gw;
    assert!(gw.child.try_wait().unwrap().is_none(), "the gateway exited");
    let fresh = initialize(addr, "sendit", "2025-06-18");
    for (id, session) in [(21, &session), (22, &fresh)] {
        let v = call(addr, session, id, "list_contacts", json!({})).json();
        assert_eq!(v["id"], id);
        assert!(v["result"]["content"].is_array(), "{v}");
        assert_ne!(v["result"]["isError"], true, "{v}");
    }
    let log = std::fs::read_to_string(gw.dir.0.join("gateway.log")).unwrap();
    assert!(!log.contains("panicked"), "the gateway panicked:\n{log}");
}
