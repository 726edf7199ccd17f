//! `toolgate scan`: a server's tools, each classified by what it can do (SPEC §10), as a
//! table, JSON lines or Markdown; `--write-policy` writes the starter policy for them.

use clap::Args;
use serde_json::{json, Value};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use toolgate_gateway::config::{self, ServerSpec, UpstreamSpec};
use toolgate_risk::{classify, starter_policy, Category};

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

fn scan(args: &ScanArgs) -> Result<ExitCode, (u8, String)> {
    let usage = |m: String| (2u8, m);
    let timeout = toolgate_policy::duration::parse(&args.timeout)
        .map_err(|e| usage(format!("--timeout {:?}: {e}", args.timeout)))?;
    let spec = server_spec(args, timeout).map_err(usage)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| (1, format!("cannot start a runtime: {e}")))?;
    let tools = runtime
        .block_on(toolgate_gateway::scan::fetch_tools(&spec))
        .map_err(|e| (1, format!("cannot list the tools of {}: {e}", spec.name)))?;
    runtime.shutdown_timeout(Duration::from_secs(2));

    let mut unreadable = Vec::new();
    let mut rows = Vec::new();
    for (index, tool) in tools.iter().enumerate() {
        match tool.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => rows.push((name.to_owned(), classify(tool))),
            _ => unreadable.push(format!("tool #{index} has no name")),
        }
    }
    let mut out = io::stdout().lock();
    let write = |e: io::Error| (1u8, format!("cannot write the output: {e}"));
    if args.json {
        for (name, verdict) in &rows {
            let line = json!({"server": spec.name, "tool": name, "category": verdict.category.as_str(),
                              "risk": verdict.risk.as_str(), "evidence": verdict.evidence});
            writeln!(out, "{line}").map_err(write)?;
        }
    } else if args.markdown {
        writeln!(
            out,
            "| tool | category | risk | evidence |\n|---|---|---|---|"
        )
        .map_err(write)?;
        for (name, verdict) in &rows {
            let evidence = verdict.evidence.join("; ").replace('|', "\\|");
            writeln!(
                out,
                "| `{name}` | {} | {} | {evidence} |",
                verdict.category,
                verdict.risk.as_str()
            )
            .map_err(write)?;
        }
    } else {
        let width = rows
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            out,
            "{:<width$}  {:<11}  {:<8}  EVIDENCE",
            "TOOL", "CATEGORY", "RISK"
        )
        .map_err(write)?;
        for (name, verdict) in &rows {
            writeln!(
                out,
                "{name:<width$}  {:<11}  {:<8}  {}",
                verdict.category.as_str(),
                verdict.risk.as_str(),
                verdict.evidence.join("; ")
            )
            .map_err(write)?;
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
                rows.iter().filter(|(_, v)| v.category == *c).count()
            )
        })
        .collect();
        writeln!(out, "{} tools: {}", rows.len(), counts.join(", ")).map_err(write)?;
    }
    for problem in &unreadable {
        eprintln!("toolgate: could not classify {problem}");
    }
    if let Some(path) = &args.write_policy {
        let policy = starter_policy(&spec.name, &tools);
        let text = serde_json::to_string_pretty(&policy).expect("a policy serializes") + "\n";
        std::fs::write(path, text)
            .map_err(|e| (1, format!("cannot write {}: {e}", path.display())))?;
        eprintln!(
            "toolgate: wrote the starter policy for {} tools to {}",
            rows.len(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The server to scan: `-- COMMAND`, a URL, or a configured name.
fn server_spec(args: &ScanArgs, timeout: Duration) -> Result<ServerSpec, String> {
    let spec = |name: &str, upstream: UpstreamSpec| ServerSpec {
        name: name.to_owned(),
        upstream,
        timeout,
        shadow: false,
        fail_open: false,
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
            let settings =
                config::load(&path).map_err(|e| format!("configuration rejected:\n{e}"))?;
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
