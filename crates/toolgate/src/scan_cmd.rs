//! `toolgate scan`: a server's tools, each classified by what it can do (SPEC §10), as a
//! table, JSON lines or Markdown; `--write-policy` writes the starter policy for them.

use crate::audit_cmd::find_config;
use clap::Args;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use toolgate_gateway::config::{ServerSpec, Settings, UpstreamSpec};
use toolgate_gateway::pins;
use toolgate_risk::{classify, starter_policy, Category, Flag};
use toolgate_store::EmbeddedStore;

/// `toolgate scan`.
#[derive(Args)]
pub struct ScanArgs {
    /// A configured server's name, or a Streamable HTTP URL (omit with `-- COMMAND`).
    target: Option<String>,
    /// Configuration file, for a server name (default: toolgate.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One JSON object per tool.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// A Markdown table.
    #[arg(long)]
    markdown: bool,
    /// Write the starter policy for every tool to FILE.
    #[arg(long, value_name = "FILE")]
    write_policy: Option<PathBuf>,
    /// How long the server may take to answer.
    #[arg(long, default_value = "30s")]
    timeout: String,
    /// A stdio server to start: the command and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

/// Runs `toolgate scan`.
pub fn run(args: ScanArgs) -> ExitCode {
    match scan(&args) {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("toolgate: {message}");
            ExitCode::from(code)
        }
    }
}

/// One tool as the scan reports it.
struct Row {
    /// Its name.
    name: String,
    /// What it can do.
    verdict: toolgate_risk::Classification,
    /// What the poisoning and shadowing checks found.
    flags: Vec<Flag>,
}

fn scan(args: &ScanArgs) -> Result<ExitCode, (u8, String)> {
    let usage = |m: String| (2u8, m);
    let timeout = toolgate_policy::duration::parse(&args.timeout)
        .map_err(|e| usage(format!("--timeout {:?}: {e}", args.timeout)))?;
    let settings = settings(args).map_err(usage)?;
    let spec = server_spec(args, settings.as_ref(), timeout).map_err(usage)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| (1, format!("cannot start a runtime: {e}")))?;
    let listing =
        crate::progress::Progress::new(format!("listing the tools of {}…", spec.name), None);
    let list = runtime
        .block_on(toolgate_gateway::scan::fetch_tools(&spec))
        .map_err(|e| (1, format!("cannot list the tools of {}: {e}", spec.name)))?;
    drop(listing);
    runtime.shutdown_timeout(Duration::from_secs(2));

    // What could not be read is reported; everything else is still classified.
    let mut problems = list.problems.clone();
    if let Some(e) = &list.broken_off {
        problems.push(format!(
            "reading stopped after {} tools: {}",
            list.tools.len(),
            e.message
        ));
    }
    // What a tool may shadow: other servers' pinned tools; its own server's names say
    // which mentions are the server speaking of itself.
    let mut others = pinned_elsewhere(settings.as_ref(), &spec.name);
    others.extend(list.tools.iter().filter_map(|t| {
        let name = t.get("name")?.as_str()?;
        Some((spec.name.clone(), name.to_owned()))
    }));
    let mut rows: Vec<Row> = Vec::new();
    let mut classified = Vec::new();
    let mut seen = HashSet::new();
    let mut progress = crate::progress::Progress::new("classifying", Some(list.tools.len()));
    for (index, tool) in list.tools.iter().enumerate() {
        progress.advance(1);
        let number = index + 1;
        let Some(object) = tool.as_object() else {
            problems.push(format!("tool #{number} is not an object"));
            continue;
        };
        let name = match object.get("name") {
            Some(Value::String(name)) if !name.is_empty() => name.clone(),
            _ => {
                problems.push(format!("tool #{number} has no name"));
                continue;
            }
        };
        if !seen.insert(name.clone()) {
            problems.push(format!(
                "tool #{number} repeats the name {name:?}; only the first is classified"
            ));
            continue;
        }
        if object.get("inputSchema").is_some_and(|s| !s.is_object()) {
            problems.push(format!(
                "tool {name:?}: its inputSchema is not an object (classified without it)"
            ));
        }
        rows.push(Row {
            verdict: classify(tool),
            flags: pins::flags(&spec.name, tool, &others),
            name,
        });
        classified.push(tool.clone());
    }
    drop(progress);
    print_rows(args, &spec.name, &rows)
        .map_err(|e| (1u8, format!("cannot write the output: {e}")))?;
    for problem in &problems {
        eprintln!("toolgate: could not read: {problem}");
    }
    if let Some(path) = &args.write_policy {
        let policy = starter_policy(&spec.name, &classified);
        let text = serde_json::to_string_pretty(&policy).expect("a policy serializes") + "\n";
        std::fs::write(path, text)
            .map_err(|e| (1, format!("cannot write {}: {e}", path.display())))?;
        eprintln!(
            "toolgate: wrote the starter policy for {} tools to {}{}",
            rows.len(),
            path.display(),
            if problems.is_empty() {
                ""
            } else {
                " (tools that could not be read are denied by its default)"
            }
        );
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The kinds of a tool's flags, for one table cell.
fn flag_kinds(flags: &[Flag]) -> String {
    let kinds: BTreeSet<&str> = flags.iter().map(|f| f.kind.as_str()).collect();
    if kinds.is_empty() {
        "-".to_owned()
    } else {
        kinds.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn print_rows(args: &ScanArgs, server: &str, rows: &[Row]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if args.json {
        for row in rows {
            let line = json!({"server": server, "tool": row.name, "category": row.verdict.category.as_str(),
                              "risk": row.verdict.risk.as_str(), "evidence": row.verdict.evidence,
                              "flags": pins::flags_json(&row.flags)});
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    if args.markdown {
        writeln!(
            out,
            "| tool | category | risk | flags | evidence |\n|---|---|---|---|---|"
        )?;
        for row in rows {
            let evidence = row.verdict.evidence.join("; ").replace('|', "\\|");
            writeln!(
                out,
                "| `{}` | {} | {} | {} | {evidence} |",
                row.name,
                row.verdict.category,
                row.verdict.risk.as_str(),
                flag_kinds(&row.flags)
            )?;
        }
        return Ok(());
    }
    let width = |f: &dyn Fn(&Row) -> usize, title: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let name_width = width(&|r| r.name.chars().count(), "TOOL");
    let flags_width = width(&|r| flag_kinds(&r.flags).len(), "FLAGS");
    writeln!(
        out,
        "{:<name_width$}  {:<11}  {:<8}  {:<flags_width$}  EVIDENCE",
        "TOOL", "CATEGORY", "RISK", "FLAGS"
    )?;
    for row in rows {
        writeln!(
            out,
            "{:<name_width$}  {:<11}  {:<8}  {:<flags_width$}  {}",
            row.name,
            row.verdict.category.as_str(),
            row.verdict.risk.as_str(),
            flag_kinds(&row.flags),
            row.verdict.evidence.join("; ")
        )?;
    }
    let counts: Vec<String> = [
        Category::Read,
        Category::Write,
        Category::Execute,
        Category::Destructive,
        Category::Financial,
    ]
    .iter()
    .map(|c| {
        format!(
            "{} {c}",
            rows.iter().filter(|r| r.verdict.category == *c).count()
        )
    })
    .collect();
    let flagged = rows.iter().filter(|r| !r.flags.is_empty()).count();
    writeln!(
        out,
        "{} tools: {}; {flagged} flagged",
        rows.len(),
        counts.join(", ")
    )?;
    for row in rows {
        for flag in &row.flags {
            writeln!(
                out,
                "flag: {} {} at {}: {}",
                row.name,
                flag.kind.as_str(),
                flag.location,
                flag.evidence
            )?;
        }
    }
    Ok(())
}

/// The configuration: `--config`, or toolgate.toml in the working directory if it exists.
fn settings(args: &ScanArgs) -> Result<Option<Settings>, String> {
    find_config(args.config.as_deref()).map_err(|e| format!("configuration rejected:\n{e}"))
}

/// The tools the gateway has pinned for servers other than `server` (what a scanned tool
/// may shadow), from the configuration's store if it has one.
fn pinned_elsewhere(settings: Option<&Settings>, server: &str) -> Vec<(String, String)> {
    let Some(settings) = settings else {
        return Vec::new();
    };
    if !settings.data_dir.join("toolgate.db").is_file() {
        return Vec::new();
    }
    match EmbeddedStore::open(&settings.data_dir).and_then(|s| s.tool_pins(None)) {
        Ok(pins) => pins
            .into_iter()
            .filter(|p| p.server != server)
            .map(|p| (p.server, p.tool))
            .collect(),
        Err(e) => {
            eprintln!("toolgate: warning: cannot read the pinned tools of other servers, so shadowing is not checked: {e}");
            Vec::new()
        }
    }
}

/// The server to scan: `-- COMMAND`, a URL, or a configured name.
fn server_spec(
    args: &ScanArgs,
    settings: Option<&Settings>,
    timeout: Duration,
) -> Result<ServerSpec, String> {
    let spec = |name: &str, upstream: UpstreamSpec| ServerSpec {
        name: name.to_owned(),
        upstream,
        timeout,
        shadow: false,
        fail_open: false,
        max_message_bytes: toolgate_gateway::config::DEFAULT_MAX_MESSAGE_BYTES,
    };
    match (&args.target, args.command.split_first()) {
        (Some(_), Some(_)) => Err("give a server name or URL, or `-- COMMAND`, not both".into()),
        (None, Some((command, rest))) => Ok(spec(
            "stdio",
            UpstreamSpec::Stdio {
                command: command.clone(),
                args: rest.to_vec(),
                env: Vec::new(),
            },
        )),
        (Some(url), None) if url.starts_with("http://") || url.starts_with("https://") => Ok(spec(
            "url",
            UpstreamSpec::Http {
                url: url.clone(),
                headers: Vec::new(),
                ca_file: None,
                connect_timeout: timeout,
            },
        )),
        (Some(name), None) => {
            let path = args
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from("toolgate.toml"));
            let settings = settings.ok_or_else(|| {
                format!(
                    "{name:?} is not a URL, and there is no configuration to find a server of that name in ({} does not exist)",
                    path.display()
                )
            })?;
            let found = settings.servers.iter().find(|s| &s.name == name).cloned();
            found
                .map(|mut s| {
                    s.timeout = timeout;
                    s
                })
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        settings.servers.iter().map(|s| s.name.as_str()).collect();
                    format!(
                        "no server named {name:?} in {} (servers: {})",
                        path.display(),
                        known.join(", ")
                    )
                })
        }
        (None, None) => {
            Err("say what to scan: a configured server name, a URL, or `-- COMMAND`".into())
        }
    }
}
