//! `toolgate audit query|verify|export|tail` against a real embedded store: each test fills a
//! scratch data directory through `EmbeddedStore::append_audit` and runs the real binary.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use toolgate_gateway::time::{format_rfc3339_ms, now_unix_ms};
use toolgate_store::audit::{AuditEntry, CallOutcome, CallRecord};
use toolgate_store::EmbeddedStore;

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory unique to this test and process.
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "toolgate-audit-cli-{tag}-{}-{}",
            std::process::id(),
            now_unix_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        TempDir(dir)
    }

    /// The data directory inside it (where the store lives).
    fn data(&self) -> PathBuf {
        self.0.join("data")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A call record with the fields the tests vary; the rest plausible defaults.
fn call(id: &str, ts: &str, grant: &str, tool: Option<&str>, decision: &str) -> CallRecord {
    CallRecord {
        ts: ts.into(),
        request_id: id.into(),
        jsonrpc_id: json!(1),
        grant_id: format!("gid-{grant}"),
        grant: grant.into(),
        identity: grant.into(),
        server: "sendit".into(),
        method: if tool.is_some() {
            "tools/call"
        } else {
            "tools/list"
        }
        .into(),
        tool: tool.map(Into::into),
        decision: decision.into(),
        forwarded: decision == "allow",
        ..CallRecord::default()
    }
}

/// The fixture written by [`fill`]: request ids in chain order of their calls.
///
/// - r1 (2020-01-01) alice send_email allow, forwarded; its outcome is entry 3: `ok`, 12.5 ms
/// - r2 (2020-01-02) bob wipe_disk deny, message with a comma and quotes; entry 2
/// - r3 (2020-01-03 12:00:00.500) alice send_email rate_limited
/// - r4 (an hour ago) carol tools/list allow (not forwarded)
fn fill(data: &Path) -> EmbeddedStore {
    let store = EmbeddedStore::open(data).expect("open store");
    let r1 = CallRecord {
        jsonrpc_id: json!("a"),
        rule: Some("allow-send".into()),
        arg_keys: vec!["body".into(), "to".into()],
        ..call(
            "r1",
            "2020-01-01T00:00:00.000Z",
            "alice",
            Some("send_email"),
            "allow",
        )
    };
    let r2 = CallRecord {
        jsonrpc_id: json!(2),
        rule: Some("no-wipe".into()),
        message: Some("refused, \"never\" wipe".into()),
        arg_keys: vec!["force".into(), "path".into()],
        ..call(
            "r2",
            "2020-01-02T00:00:00.000Z",
            "bob",
            Some("wipe_disk"),
            "deny",
        )
    };
    let r3 = CallRecord {
        rule: Some("limits.hourly".into()),
        ..call(
            "r3",
            "2020-01-03T12:00:00.500Z",
            "alice",
            Some("send_email"),
            "rate_limited",
        )
    };
    let r4 = CallRecord {
        forwarded: false,
        ..call(
            "r4",
            &format_rfc3339_ms(now_unix_ms() - 3_600_000),
            "carol",
            None,
            "allow",
        )
    };
    // One append per entry, as the gateway writes them: r1 is seq 1, r2 seq 2.
    for entry in [
        AuditEntry::Call(r1),
        AuditEntry::Call(r2),
        AuditEntry::Outcome(CallOutcome {
            ts: "2020-01-01T00:00:00.013Z".into(),
            request_id: "r1".into(),
            upstream_status: "ok".into(),
            latency_ms: 12.5,
        }),
        AuditEntry::Call(r3),
        AuditEntry::Call(r4),
    ] {
        store.append_audit(&[entry]).expect("append");
    }
    store
}

/// Runs `toolgate audit <args>` in `cwd` (so no stray toolgate.toml is picked up).
fn audit(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .current_dir(cwd)
        .arg("audit")
        .args(args)
        .output()
        .expect("run toolgate")
}

/// stdout as text, after asserting the exit code (with stderr in the message).
fn stdout_of(output: &Output, code: i32) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

/// `audit query --json` with `filters`: the request ids printed, in order, and the objects.
fn query(tmp: &TempDir, filters: &[&str]) -> (Vec<String>, Vec<Value>) {
    let data = tmp.data();
    let mut args = vec!["query", "--json", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(filters);
    let text = stdout_of(&audit(&tmp.0, &args), 0);
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let ids = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    (ids, records)
}

#[test]
fn query_filters_and_merges_outcomes() {
    let tmp = TempDir::new("query");
    fill(&tmp.data());

    let (ids, records) = query(&tmp, &[]);
    assert_eq!(ids, ["r1", "r2", "r3", "r4"]);
    assert_eq!(records[0]["upstream_status"], "ok");
    assert_eq!(records[0]["latency_ms"], 12.5);
    assert_eq!(records[1]["upstream_status"], Value::Null);
    for field in [
        "ts",
        "request_id",
        "jsonrpc_id",
        "session_id",
        "grant_id",
        "grant",
        "identity",
        "server",
        "method",
        "tool",
        "policy_id",
        "policy_version",
        "decision",
        "rule",
        "message",
        "arg_keys",
        "args_sha256",
        "upstream_status",
        "latency_ms",
        "approval_id",
        "hash",
        "prev_hash",
    ] {
        assert!(records[0].get(field).is_some(), "missing {field}");
    }
    assert_eq!(records[1]["prev_hash"], records[0]["hash"]);

    assert_eq!(query(&tmp, &["--decision", "deny"]).0, ["r2"]);
    assert_eq!(query(&tmp, &["--tool", "send_email"]).0, ["r1", "r3"]);
    assert_eq!(query(&tmp, &["--grant", "alice"]).0, ["r1", "r3"]);
    assert_eq!(
        query(&tmp, &["--grant", "alice", "--decision", "allow"]).0,
        ["r1"]
    );
    assert_eq!(query(&tmp, &["--rule", "no-wipe"]).0, ["r2"]);
    assert_eq!(query(&tmp, &["--limit", "2"]).0, ["r3", "r4"]);
    // RFC 3339 bounds: since inclusive, until exclusive, offsets and fractions honoured.
    assert_eq!(
        query(&tmp, &["--since", "2020-01-02T00:00:00Z"]).0,
        ["r2", "r3", "r4"]
    );
    assert_eq!(
        query(
            &tmp,
            &[
                "--since",
                "2020-01-01T00:00:01Z",
                "--until",
                "2020-01-03T12:00:00.5Z"
            ]
        )
        .0,
        ["r2"]
    );
    assert_eq!(
        query(&tmp, &["--until", "2020-01-03T13:00:00.501+01:00"]).0,
        ["r1", "r2", "r3"]
    );
    // Durations mean "that long ago".
    assert_eq!(query(&tmp, &["--since", "1d"]).0, ["r4"]);
    assert_eq!(query(&tmp, &["--since", "30m"]).0, Vec::<String>::new());
    assert_eq!(query(&tmp, &["--until", "90s"]).0.len(), 4);
}

#[test]
fn query_prints_readable_lines_without_json() {
    let tmp = TempDir::new("human");
    fill(&tmp.data());
    let data = tmp.data();
    let text = stdout_of(
        &audit(&tmp.0, &["query", "--data-dir", data.to_str().unwrap()]),
        0,
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for part in [
        "2020-01-01T00:00:00.000Z",
        "allow",
        "sendit",
        "send_email",
        "grant=alice",
        "rule=allow-send",
        "upstream=ok 12.5 ms",
    ] {
        assert!(lines[0].contains(part), "{part} not in {:?}", lines[0]);
    }
    assert!(lines[3].contains("tools/list"), "{}", lines[3]);
}

#[test]
fn bad_flag_values_are_refused_naming_the_flag() {
    let tmp = TempDir::new("flags");
    fill(&tmp.data());
    let data = tmp.data();
    for (flag, value) in [
        ("--decision", "maybe"),
        ("--since", "yesterday"),
        ("--until", "2020-13-01T00:00:00Z"),
        ("--limit", "many"),
    ] {
        let output = audit(
            &tmp.0,
            &["query", "--data-dir", data.to_str().unwrap(), flag, value],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}

#[test]
fn a_missing_store_is_refused_not_created() {
    let tmp = TempDir::new("missing");
    let nowhere = tmp.0.join("nowhere");
    for command in ["query", "verify", "tail"] {
        let output = audit(&tmp.0, &[command, "--data-dir", nowhere.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(nowhere.to_str().unwrap()),
            "{command}: {stderr}"
        );
    }
    assert!(!nowhere.exists(), "a read command created the data dir");
    // Without flags: the default .toolgate in the working directory, also absent.
    let output = audit(&tmp.0, &["query"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains(".toolgate"));
}

#[test]
fn the_config_file_locates_the_store() {
    let tmp = TempDir::new("config");
    fill(&tmp.data());
    std::fs::write(
        tmp.0.join("toolgate.toml"),
        "[gateway]\ndata_dir = \"data\"\n",
    )
    .unwrap();
    // The default toolgate.toml in the working directory, then an explicit --config from
    // elsewhere (data_dir is relative to the file).
    let text = stdout_of(&audit(&tmp.0, &["query", "--json"]), 0);
    assert_eq!(text.lines().count(), 4);
    let config = tmp.0.join("toolgate.toml");
    let text = stdout_of(
        &audit(
            Path::new("/"),
            &["query", "--json", "--config", config.to_str().unwrap()],
        ),
        0,
    );
    assert_eq!(text.lines().count(), 4);
    // A configuration that does not load is reported, exit 2.
    std::fs::write(&config, "[gateway]\nbogus = 1\n").unwrap();
    let output = audit(&tmp.0, &["query"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bogus"), "{stderr}");
}

#[test]
fn export_writes_csv_with_quoting_and_jsonl_to_a_file() {
    let tmp = TempDir::new("export");
    fill(&tmp.data());
    let data = tmp.data();
    let data = data.to_str().unwrap();

    let csv = stdout_of(
        &audit(&tmp.0, &["export", "--format", "csv", "--data-dir", data]),
        0,
    );
    let rows: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        rows[0],
        "ts,request_id,jsonrpc_id,session_id,grant_id,grant,identity,server,method,tool,\
         policy_id,policy_version,decision,rule,message,arg_keys,args_sha256,upstream_status,\
         latency_ms,approval_id,hash,prev_hash"
    );
    assert_eq!(rows.len(), 6, "{csv:?}"); // header, four records, and the final terminator
    assert_eq!(rows[5], "");
    assert!(
        rows[1].starts_with(
            "2020-01-01T00:00:00.000Z,r1,\"\"\"a\"\"\",,gid-alice,alice,alice,sendit,tools/call,\
             send_email,,,allow,allow-send,,body;to,,ok,12.5,,"
        ),
        "{}",
        rows[1]
    );
    assert!(
        rows[2].starts_with(
            "2020-01-02T00:00:00.000Z,r2,2,,gid-bob,bob,bob,sendit,tools/call,wipe_disk,,,deny,\
             no-wipe,\"refused, \"\"never\"\" wipe\",force;path,,,,,"
        ),
        "{}",
        rows[2]
    );
    // The hashes close each row: 22 columns once the quoted message is accounted for.
    let (_, records) = query(&tmp, &["--decision", "deny"]);
    let tail = format!(
        ",{},{}",
        records[0]["hash"].as_str().unwrap(),
        records[0]["prev_hash"].as_str().unwrap()
    );
    assert!(rows[2].ends_with(&tail), "{}", rows[2]);

    let out = tmp.0.join("export.jsonl");
    let output = audit(
        &tmp.0,
        &[
            "export",
            "--format",
            "jsonl",
            "--tool",
            "send_email",
            "--data-dir",
            data,
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(stdout_of(&output, 0), "");
    let written = std::fs::read_to_string(&out).unwrap();
    let (_, expected) = query(&tmp, &["--tool", "send_email"]);
    let lines: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, expected);
}

#[test]
fn verify_passes_an_intact_store_and_names_an_altered_record() {
    let tmp = TempDir::new("verify");
    drop(fill(&tmp.data()));
    let data = tmp.data();
    let data = data.to_str().unwrap();

    let text = stdout_of(&audit(&tmp.0, &["verify", "--data-dir", data]), 0);
    assert!(
        text.contains("chain calls: 5 records verified, head "),
        "{text}"
    );
    let text = stdout_of(&audit(&tmp.0, &["verify", "--json", "--data-dir", data]), 0);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["chain"], "calls");
    assert_eq!(first["entries"], 5);
    assert_eq!(first["ok"], true);

    let db = rusqlite::Connection::open(tmp.data().join("toolgate.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE audit_log SET body = replace(body, '\"deny\"', '\"allow\"') WHERE seq = 2",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    let text = stdout_of(&audit(&tmp.0, &["verify", "--data-dir", data]), 1);
    assert!(
        text.contains("record 2") && text.contains("altered"),
        "{text}"
    );
    let text = stdout_of(&audit(&tmp.0, &["verify", "--json", "--data-dir", data]), 1);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["ok"], false);
    assert_eq!(first["seq"], 2);
    assert!(first["reason"].as_str().unwrap().contains("altered"));
}

/// A running `audit tail`, killed on drop, whose stdout lines arrive on a channel.
struct Tail {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    /// Starts `toolgate audit tail <args>`.
    fn start(cwd: &Path, args: &[&str]) -> Tail {
        let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .current_dir(cwd)
            .arg("audit")
            .arg("tail")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tail");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Tail { child, lines }
    }

    /// The next line, failing the test after a few seconds without one.
    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(5))
            .expect("a line from audit tail in time")
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tail_prints_the_last_records_then_follows_new_ones() {
    let tmp = TempDir::new("tail-json");
    let store = fill(&tmp.data());
    let data = tmp.data();
    let tail = Tail::start(
        &tmp.0,
        &[
            "--json",
            "--lines",
            "2",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let ids: Vec<Value> = (0..2)
        .map(|_| serde_json::from_str::<Value>(&tail.next()).unwrap()["request_id"].clone())
        .collect();
    assert_eq!(ids, ["r3", "r4"]);

    let new = call(
        "r5",
        &format_rfc3339_ms(now_unix_ms()),
        "dave",
        Some("send_email"),
        "allow",
    );
    store.append_audit(&[AuditEntry::Call(new)]).unwrap();
    let line: Value = serde_json::from_str(&tail.next()).unwrap();
    assert_eq!(
        (&line["kind"], &line["request_id"]),
        (&json!("call"), &json!("r5"))
    );
    store
        .append_audit(&[AuditEntry::Outcome(CallOutcome {
            ts: format_rfc3339_ms(now_unix_ms()),
            request_id: "r5".into(),
            upstream_status: "tool_error".into(),
            latency_ms: 3.0,
        })])
        .unwrap();
    let line: Value = serde_json::from_str(&tail.next()).unwrap();
    assert_eq!(line["kind"], "outcome");
    assert_eq!(line["upstream_status"], "tool_error");
}

#[test]
fn tail_shows_readable_lines_and_outcomes() {
    let tmp = TempDir::new("tail-human");
    let store = fill(&tmp.data());
    let data = tmp.data();
    let tail = Tail::start(&tmp.0, &["-n", "1", "--data-dir", data.to_str().unwrap()]);
    let first = tail.next();
    assert!(first.contains("grant=carol"), "{first}");

    store
        .append_audit(&[AuditEntry::Call(call(
            "r6",
            &format_rfc3339_ms(now_unix_ms()),
            "erin",
            Some("wipe_disk"),
            "allow",
        ))])
        .unwrap();
    let line = tail.next();
    assert!(
        line.contains("wipe_disk") && line.contains("grant=erin"),
        "{line}"
    );
    store
        .append_audit(&[AuditEntry::Outcome(CallOutcome {
            ts: format_rfc3339_ms(now_unix_ms()),
            request_id: "r6".into(),
            upstream_status: "ok".into(),
            latency_ms: 7.25,
        })])
        .unwrap();
    let line = tail.next();
    assert!(line.contains("r6 upstream ok in 7.25 ms"), "{line}");
}
