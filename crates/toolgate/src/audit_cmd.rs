//! `toolgate audit query|verify|export|tail` (SPEC §2, §9): the operator's view of the audit
//! log in the embedded store.
//!
//! Every command only *reads* the log. Each finds the store the way `serve` would (`--data-dir`,
//! else the configuration's `data_dir`, else `.toolgate`) and refuses, rather than creating an
//! empty store, when there is no `toolgate.db` there: a typo in a path must not look like an
//! empty audit log.
//!
//! Exit codes: 0 success; 1 a store could not be read, an output could not be written, or (for
//! `verify`) a chain does not hold; 2 a usage problem (bad flag value, configuration rejected,
//! no store where one was expected).

use clap::{Args, Subcommand, ValueEnum};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use toolgate_gateway::config::{self, Settings};
use toolgate_gateway::time::parse_time_bound as parse_time;
use toolgate_store::audit::{
    self, AdminRecord, AuditEntry, AuditFilter, Broken, MergedRecord, StoredEntry, Verified, CALLS,
};
use toolgate_store::{EmbeddedStore, PostgresAuditLog, StoreError};

/// The decisions a record can carry (SPEC §1); `--decision` accepts exactly these.
const DECISIONS: [&str; 5] = ["allow", "deny", "hide", "rate_limited", "approval_required"];

/// The CSV columns of `audit export --format csv`, in order: the SPEC §9 fields.
const CSV_COLUMNS: [&str; 22] = [
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
];

/// How often `audit tail` looks for new entries.
const TAIL_POLL: Duration = Duration::from_millis(200);
/// How many entries `audit tail` reads per poll (it reads again at once after a full page).
const TAIL_PAGE: usize = 1000;

/// `toolgate audit …`.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Print call records (merged with their outcomes), oldest first.
    Query(QueryArgs),
    /// Verify every hash chain; exit 1 naming the first record that does not hold.
    Verify(VerifyArgs),
    /// Write call records as JSONL or CSV (stdout by default).
    Export(ExportArgs),
    /// Print the last call records, then follow the log as it grows (until interrupted).
    Tail(TailArgs),
}

/// Where the store is: shared by every audit command.
#[derive(Args)]
pub struct StoreArgs {
    /// Configuration file (default: toolgate.toml in the working directory, if it exists).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The data directory holding toolgate.db (overrides the configuration's data_dir; the
    /// audit commands then do not read the configuration, the grant commands still check
    /// grants against it).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

impl StoreArgs {
    /// The configuration: `--config`, or `toolgate.toml` in the working directory if it
    /// exists; `hint` tells how to do without it when it is rejected. An explicit `--config`
    /// that does not exist is an error (load says "cannot read"), not a silent fall-back to
    /// the default directory: that would reach some other store.
    pub(crate) fn settings(&self, hint: &str) -> Result<Option<Settings>, Failure> {
        find_config(self.config.as_deref())
            .map_err(|e| Failure::Usage(format!("configuration rejected ({hint}):\n{e}")))
    }
}

/// The configuration at `explicit`, or `toolgate.toml` in the working directory if it
/// exists (`None` if it does not).
pub(crate) fn find_config(explicit: Option<&Path>) -> Result<Option<Settings>, String> {
    let path = explicit.unwrap_or(Path::new("toolgate.toml"));
    if explicit.is_none() && !path.exists() {
        return Ok(None);
    }
    config::load(path).map(Some).map_err(|e| e.to_string())
}

/// The data directory when neither `--data-dir` nor a configuration names one.
pub(crate) fn default_data_dir() -> PathBuf {
    Settings::new(std::net::SocketAddr::from(([127, 0, 0, 1], 8080))).data_dir
}

/// Refuses a data directory without a database: `EmbeddedStore::open` creates what is
/// missing, which for a wrong path would give a plausible-looking empty `what`. (A race with
/// someone deleting the file in between is harmless: the store then comes up empty, which
/// is what it is.)
pub(crate) fn existing_store(dir: &Path, what: &str) -> Result<(), Failure> {
    if dir.join("toolgate.db").is_file() {
        return Ok(());
    }
    Err(Failure::Usage(format!(
        "no {what} in {}: there is no toolgate.db there (point --data-dir or --config at the \
         gateway's data directory)",
        dir.display()
    )))
}

/// Which records: shared by `audit query`, `audit export` and `policy replay`. Every filter
/// given must match.
#[derive(Args)]
pub struct FilterArgs {
    /// Only records of this grant (its label).
    #[arg(long, value_name = "G")]
    grant: Option<String>,
    /// Only records for this server.
    #[arg(long, value_name = "S")]
    server: Option<String>,
    /// Only records for this tool.
    #[arg(long, value_name = "T")]
    tool: Option<String>,
    /// Only records with this decision.
    #[arg(long, value_name = "D", value_parser = DECISIONS)]
    decision: Option<String>,
    /// Only records decided by this rule id.
    #[arg(long, value_name = "R")]
    rule: Option<String>,
    /// Only records at or after TIME: RFC 3339 (2026-01-02T15:04:05Z) or a duration meaning
    /// that long ago (7d, 30m, 90s).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<String>,
    /// Only records before TIME (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<String>,
    /// At most N records: the newest N of those matching.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

impl FilterArgs {
    /// The store's filter for these flags (the times are already normalized by [`parse_time`]).
    pub(crate) fn filter(&self) -> AuditFilter {
        AuditFilter {
            grant: self.grant.clone(),
            server: self.server.clone(),
            tool: self.tool.clone(),
            decision: self.decision.clone(),
            rule: self.rule.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            limit: self.limit,
        }
    }
}

/// `toolgate audit query`.
#[derive(Args)]
pub struct QueryArgs {
    /// Where the store is.
    #[command(flatten)]
    store: StoreArgs,
    /// Which records.
    #[command(flatten)]
    filter: FilterArgs,
    /// One JSON object per line (the SPEC §9 record) instead of readable lines.
    #[arg(long)]
    json: bool,
    /// The admin stream (policy loaded, grant minted or revoked, approval decided) instead
    /// of call records; only --since, --until and --limit apply.
    #[arg(long, conflicts_with_all = ["grant", "server", "tool", "decision", "rule"])]
    admin: bool,
}

/// `toolgate audit verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Where the store is.
    #[command(flatten)]
    store: StoreArgs,
    /// One JSON object per chain.
    #[arg(long)]
    json: bool,
}

/// The formats `audit export` writes.
#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line, as `audit query --json` prints them.
    Jsonl,
    /// A header row of the SPEC §9 field names, then one row per record.
    Csv,
}

/// `toolgate audit export`.
#[derive(Args)]
pub struct ExportArgs {
    /// Where the store is.
    #[command(flatten)]
    store: StoreArgs,
    /// Which records.
    #[command(flatten)]
    filter: FilterArgs,
    /// Output format.
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// Write here instead of stdout (created or truncated).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `toolgate audit tail`.
#[derive(Args)]
pub struct TailArgs {
    /// Where the store is.
    #[command(flatten)]
    store: StoreArgs,
    /// How many existing call records to print before following.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 10)]
    lines: usize,
    /// JSON lines: the existing records as `audit query --json` prints them, then each new
    /// entry's body exactly as stored (its `kind` tells a call from an outcome).
    #[arg(long)]
    json: bool,
}

/// Why a command stopped early: what to tell the operator, and the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A usage or setup problem (exit 2).
    Usage(String),
    /// The store or the output failed (exit 1).
    Runtime(String),
    /// stdout was closed by its reader (`… | head`): stop quietly, successfully.
    ClosedOutput,
}

impl Failure {
    /// A failed write to an output named `what`; a closed pipe is not worth a message.
    pub(crate) fn write(what: &str, e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::ClosedOutput
        } else {
            Failure::Runtime(format!("cannot write {what}: {e}"))
        }
    }
}

/// Runs an audit subcommand and maps its outcome to the process exit code.
pub fn run(command: AuditCommand) -> ExitCode {
    let outcome = match command {
        AuditCommand::Query(args) => query(&args),
        AuditCommand::Verify(args) => verify(&args),
        AuditCommand::Export(args) => export(&args),
        AuditCommand::Tail(args) => tail(&args),
    };
    exit_code(outcome)
}

/// The exit code of a command's outcome, saying why on stderr when it failed.
pub(crate) fn exit_code(outcome: Result<ExitCode, Failure>) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(Failure::ClosedOutput) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("toolgate: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("toolgate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Where the store a command reads is.
enum Location {
    /// The embedded store in this data directory.
    Embedded(PathBuf),
    /// PostgreSQL (cluster mode: the configuration's `[store] postgres_url`).
    Postgres(String),
}

/// Finds the audit log: `--data-dir` if given; else the configuration (`--config`, or
/// `toolgate.toml` if it exists): its PostgreSQL if it names one, else its data directory;
/// else the default data directory.
fn location(args: &StoreArgs) -> Result<Location, Failure> {
    if let Some(dir) = &args.data_dir {
        return Ok(Location::Embedded(dir.clone()));
    }
    Ok(
        match args.settings("pass --data-dir DIR to read a store without it")? {
            Some(Settings {
                postgres_url: Some(url),
                ..
            }) => Location::Postgres(url),
            Some(settings) => Location::Embedded(settings.data_dir),
            None => Location::Embedded(default_data_dir()),
        },
    )
}

/// The store of shared state (grants, tool pins, approvals) that `args` point at — PostgreSQL
/// for a configuration in cluster mode, else an existing embedded store (`what` names what
/// is looked for) — and a runtime to reach it.
pub(crate) fn shared_store(
    args: &StoreArgs,
    what: &str,
) -> Result<(toolgate_gateway::SharedStore, tokio::runtime::Runtime), Failure> {
    use toolgate_gateway::SharedStore;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start a runtime: {e}")))?;
    let store = match location(args)? {
        Location::Postgres(url) => SharedStore::Postgres(std::sync::Arc::new(
            PostgresAuditLog::connect(&url).map_err(|e| Failure::Usage(e.to_string()))?,
        )),
        Location::Embedded(dir) => {
            existing_store(&dir, what)?;
            let store = EmbeddedStore::open(&dir).map_err(|e| Failure::Runtime(e.to_string()))?;
            SharedStore::Embedded(std::sync::Arc::new(store))
        }
    };
    Ok((store, runtime))
}

/// The audit log being read.
pub(crate) enum Reader {
    /// The embedded store.
    Embedded(Box<EmbeddedStore>),
    /// PostgreSQL, with the runtime its client needs.
    Postgres(Box<PostgresAuditLog>, tokio::runtime::Runtime),
}

impl Reader {
    /// Call records with their outcomes.
    pub(crate) fn query(&self, filter: &AuditFilter) -> Result<Vec<MergedRecord>, StoreError> {
        match self {
            Reader::Embedded(store) => store.audit_query(filter),
            Reader::Postgres(log, runtime) => runtime.block_on(log.audit_query(filter)),
        }
    }

    /// Admin events.
    fn admin(&self, filter: &AuditFilter) -> Result<Vec<AdminRecord>, StoreError> {
        match self {
            Reader::Embedded(store) => store.audit_admin(filter),
            Reader::Postgres(log, runtime) => runtime.block_on(log.audit_admin(filter)),
        }
    }

    /// Every chain, verified.
    fn verify(&self) -> Result<Vec<Result<Verified, Broken>>, StoreError> {
        match self {
            Reader::Embedded(store) => store.audit_verify(),
            Reader::Postgres(log, runtime) => runtime.block_on(log.audit_verify()),
        }
    }

    /// Call-stream entries after row `after`.
    fn entries(&self, after: i64, limit: usize) -> Result<Vec<(i64, StoredEntry)>, StoreError> {
        match self {
            Reader::Embedded(store) => store.audit_entries(CALLS, after, limit),
            Reader::Postgres(log, runtime) => {
                runtime.block_on(log.audit_entries(CALLS, after, limit))
            }
        }
    }
}

/// Opens the existing audit log the command reads, refusing to create an embedded store.
pub(crate) fn open_store(args: &StoreArgs) -> Result<Reader, Failure> {
    let dir = match location(args)? {
        Location::Embedded(dir) => dir,
        Location::Postgres(url) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Runtime(format!("cannot start a runtime: {e}")))?;
            let log = PostgresAuditLog::connect(&url).map_err(|e| Failure::Usage(e.to_string()))?;
            return Ok(Reader::Postgres(Box::new(log), runtime));
        }
    };
    existing_store(&dir, "audit store")?;
    let store = EmbeddedStore::open(&dir).map_err(|e| Failure::Runtime(e.to_string()))?;
    // Entries a killed gateway left in its journal belong in what is read; should they not
    // go in (a read-only copy of the data directory, say), the rest is still worth reading.
    if let Err(e) = store.recover_audit_journals() {
        eprintln!("warning: entries in the audit journal could not be recovered, so some recent ones may be missing: {e}");
    }
    Ok(Reader::Embedded(Box::new(store)))
}

/// `audit query`: the matching records, readable or as JSON lines.
fn query(args: &QueryArgs) -> Result<ExitCode, Failure> {
    let store = open_store(&args.store)?;
    if args.admin {
        return admin(&store, args);
    }
    let records = store
        .query(&args.filter.filter())
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let mut out = io::stdout().lock();
    for record in &records {
        let line = if args.json {
            json_line(record)
        } else {
            human_line(record)
        };
        writeln!(out, "{line}").map_err(|e| Failure::write("stdout", e))?;
    }
    out.flush().map_err(|e| Failure::write("stdout", e))?;
    if records.is_empty() && !args.json {
        eprintln!("toolgate: no audit records match");
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit query --admin`: the admin events, readable or as JSON lines.
fn admin(store: &Reader, args: &QueryArgs) -> Result<ExitCode, Failure> {
    let events = store
        .admin(&args.filter.filter())
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let mut out = io::stdout().lock();
    for record in &events {
        let line = if args.json {
            serde_json::to_string(record).unwrap_or_default()
        } else {
            let e = &record.event;
            clean(&format!(
                "{}  {}  {}  {}  {}",
                e.ts, e.action, e.actor, e.subject, e.detail
            ))
        };
        writeln!(out, "{line}").map_err(|e| Failure::write("stdout", e))?;
    }
    out.flush().map_err(|e| Failure::write("stdout", e))?;
    Ok(ExitCode::SUCCESS)
}

/// `audit verify`: every chain, one line each; exit 1 unless all hold.
fn verify(args: &VerifyArgs) -> Result<ExitCode, Failure> {
    let store = open_store(&args.store)?;
    let results = store
        .verify()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let mut out = io::stdout().lock();
    let mut all_hold = true;
    for result in &results {
        let line = match (result, args.json) {
            (Ok(v), false) => format!(
                "chain {}: {} records verified, head {}",
                v.chain, v.entries, v.head
            ),
            (Ok(v), true) => serde_json::json!({
                "chain": v.chain, "entries": v.entries, "head": v.head, "ok": true,
            })
            .to_string(),
            (Err(b), false) => b.to_string(),
            (Err(b), true) => serde_json::json!({
                "chain": b.chain, "seq": b.seq, "reason": b.reason, "ok": false,
            })
            .to_string(),
        };
        all_hold &= result.is_ok();
        writeln!(out, "{line}").map_err(|e| Failure::write("stdout", e))?;
    }
    out.flush().map_err(|e| Failure::write("stdout", e))?;
    Ok(if all_hold {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `audit export`: the matching records as JSONL or CSV, to stdout or `--output`.
fn export(args: &ExportArgs) -> Result<ExitCode, Failure> {
    let store = open_store(&args.store)?;
    // Read before creating the output, so a failed read does not truncate an older export.
    let records = store
        .query(&args.filter.filter())
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let mut text = String::new();
    if matches!(args.format, ExportFormat::Csv) {
        text.push_str(&CSV_COLUMNS.join(","));
        text.push_str("\r\n");
    }
    let mut progress = crate::progress::Progress::new("exporting", Some(records.len()));
    for record in &records {
        progress.advance(1);
        match args.format {
            ExportFormat::Jsonl => {
                text.push_str(&json_line(record));
                text.push('\n');
            }
            ExportFormat::Csv => {
                text.push_str(&csv_row(record));
                text.push_str("\r\n");
            }
        }
    }
    drop(progress);
    match &args.output {
        Some(path) => {
            let what = path.display().to_string();
            std::fs::write(path, text).map_err(|e| Failure::write(&what, e))?;
        }
        None => {
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| Failure::write("stdout", e))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit tail`: the last `--lines` call records, then every new entry until killed.
fn tail(args: &TailArgs) -> Result<ExitCode, Failure> {
    let store = open_store(&args.store)?;
    let read = |after: i64, limit: usize| {
        store
            .entries(after, limit)
            .map_err(|e| Failure::Runtime(e.to_string()))
    };
    // One read for both the records shown and where following starts, so that nothing
    // appended in between is skipped or shown twice.
    let rows = read(0, usize::MAX)?;
    let mut last_id = rows.last().map_or(0, |(id, _)| *id);
    let entries: Vec<StoredEntry> = rows.into_iter().map(|(_, e)| e).collect();
    let recent = audit::merge(
        &entries,
        &AuditFilter {
            limit: Some(args.lines),
            ..AuditFilter::default()
        },
    );
    drop(entries);
    let out = io::stdout();
    let print = |line: &str| -> Result<(), Failure> {
        // Flushed per line: a reader on a pipe sees each record as it comes.
        let mut lock = out.lock();
        writeln!(lock, "{line}")
            .and_then(|()| lock.flush())
            .map_err(|e| Failure::write("stdout", e))
    };
    for record in &recent {
        print(&if args.json {
            json_line(record)
        } else {
            human_line(record)
        })?;
    }
    loop {
        let page = read(last_id, TAIL_PAGE)?;
        let full = page.len() == TAIL_PAGE;
        for (id, stored) in page {
            last_id = id;
            if let Some(line) = follow_line(&stored, args.json) {
                print(&line)?;
            }
        }
        if !full {
            std::thread::sleep(TAIL_POLL);
        }
    }
}

/// The line `audit tail` prints for a newly appended entry, if any: the stored body in JSON
/// mode; otherwise a call as `audit query` shows it, or a short line for an outcome.
fn follow_line(stored: &StoredEntry, json: bool) -> Option<String> {
    if json {
        return Some(stored.body.clone());
    }
    match stored.entry() {
        Ok(AuditEntry::Call(call)) => Some(human_line(&MergedRecord {
            call,
            upstream_status: None,
            latency_ms: None,
            hash: stored.hash.clone(),
            prev_hash: stored.prev_hash.clone(),
        })),
        Ok(AuditEntry::Outcome(o)) => Some(format!(
            "{}  … {} upstream {} in {} ms",
            clean(&o.ts),
            clean(&o.request_id),
            clean(&o.upstream_status),
            o.latency_ms
        )),
        // Admin entries live on their own chain; a body that does not parse is for
        // `verify` to judge, not for a live view to stop on.
        Ok(AuditEntry::Admin(_)) => None,
        Err(e) => Some(format!(
            "(record {} of chain {} is not an audit entry: {e})",
            stored.seq, stored.chain
        )),
    }
}

/// A record as one JSON line: the SPEC §9 object (`audit query --json`, JSONL export).
fn json_line(record: &MergedRecord) -> String {
    serde_json::to_string(record).expect("audit records always serialize")
}

/// A record as one readable line: time, decision, server, tool (or method), grant, rule,
/// and what the upstream did.
fn human_line(record: &MergedRecord) -> String {
    let call = &record.call;
    let what = call.tool.as_deref().unwrap_or(&call.method);
    let mut line = format!(
        "{}  {:<17}  {:<10}  {:<20}  grant={}  rule={}",
        clean(&call.ts),
        clean(&call.decision),
        clean(&call.server),
        clean(what),
        clean(&call.grant),
        clean(call.rule.as_deref().unwrap_or("-")),
    );
    match (&record.upstream_status, record.latency_ms) {
        (Some(status), Some(ms)) => {
            let _ = write!(line, "  upstream={} {ms} ms", clean(status));
        }
        (Some(status), None) => {
            let _ = write!(line, "  upstream={}", clean(status));
        }
        (None, _) if call.forwarded => line.push_str("  upstream=(no answer yet)"),
        (None, _) => {}
    }
    if call.shadow {
        line.push_str("  (shadow: not enforced)");
    }
    line
}

/// A value made safe for a terminal: control characters escaped.
///
/// Tool names, grant labels and messages come partly from agents; printed raw, an escape
/// sequence in one could rewrite the operator's screen (hide lines, fake a decision). JSON
/// output needs no such care: serde_json escapes control characters.
fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A record as one CSV row (no line terminator), in [`CSV_COLUMNS`] order: absent values
/// empty, `arg_keys` joined by `;`, `jsonrpc_id` as its JSON text.
fn csv_row(record: &MergedRecord) -> String {
    let call = &record.call;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let jsonrpc_id = if call.jsonrpc_id.is_null() {
        String::new()
    } else {
        call.jsonrpc_id.to_string()
    };
    let fields = [
        call.ts.clone(),
        call.request_id.clone(),
        jsonrpc_id,
        opt(&call.session_id),
        call.grant_id.clone(),
        call.grant.clone(),
        call.identity.clone(),
        call.server.clone(),
        call.method.clone(),
        opt(&call.tool),
        opt(&call.policy_id),
        opt(&call.policy_version),
        call.decision.clone(),
        opt(&call.rule),
        opt(&call.message),
        call.arg_keys.join(";"),
        opt(&call.args_sha256),
        opt(&record.upstream_status),
        record
            .latency_ms
            .map(|ms| ms.to_string())
            .unwrap_or_default(),
        opt(&call.approval_id),
        record.hash.clone(),
        record.prev_hash.clone(),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote, CR or LF, with embedded
/// quotes doubled; otherwise as is.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_gateway::time::{format_rfc3339_ms, now_unix_ms};

    #[test]
    fn rfc3339_times_keep_milliseconds_and_round_finer_fractions_up() {
        assert_eq!(
            parse_time("2026-01-02T03:04:05Z").unwrap(),
            "2026-01-02T03:04:05.000Z"
        );
        assert_eq!(
            parse_time("2026-01-02T03:04:05.5+01:00").unwrap(),
            "2026-01-02T02:04:05.500Z"
        );
        assert_eq!(
            parse_time("2026-01-02T03:04:05.1234Z").unwrap(),
            "2026-01-02T03:04:05.124Z"
        );
        assert_eq!(
            parse_time("2026-01-02T03:04:05.999000Z").unwrap(),
            "2026-01-02T03:04:05.999Z"
        );
        assert_eq!(
            parse_time("2026-01-02T03:04:05.9999Z").unwrap(),
            "2026-01-02T03:04:06.000Z"
        );
    }

    #[test]
    fn durations_mean_that_long_ago_and_nonsense_is_refused() {
        let before = now_unix_ms();
        let since = parse_time("90s").unwrap();
        let after = now_unix_ms();
        assert!(since >= format_rfc3339_ms(before - 90_000), "{since}");
        assert!(since <= format_rfc3339_ms(after - 90_000), "{since}");
        for bad in ["yesterday", "2026-01-02", "-5m", ""] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("cr\r"), "\"cr\r\"");
    }

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(clean("send_email"), "send_email");
        assert_eq!(clean("evil\u{1b}[2Jtool"), "evil\\u{1b}[2Jtool");
        assert_eq!(clean("a\nb"), "a\\nb");
    }
}
