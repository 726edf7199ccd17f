//! `toolgate tools list|show|diff|approve`: the pinned tool definitions of SPEC §10.
//!
//! The gateway pins each server's tool definitions when it first sees them — in its
//! embedded store, or in cluster mode in PostgreSQL, shared by every replica; a definition
//! that changes later is withheld until an operator looks at the change (`diff`) and
//! approves it. Approvals are recorded in the audit log's admin stream, and
//! running gateways honour them on the tool's next call or listing.

use crate::audit_cmd::{exit_code, shared_store, Failure, StoreArgs};
use crate::grant_cmd::actor;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::{self, Write};
use std::process::ExitCode;
use toolgate_gateway::pins;
use toolgate_gateway::SharedStore;
use toolgate_store::ToolPin;

/// `toolgate tools …`.
#[derive(Subcommand)]
pub enum ToolsCommand {
    /// List pinned tools and their status: approved, changed (withheld until approved) or
    /// flagged by the poisoning and shadowing checks.
    List(ListArgs),
    /// Show a tool's approved definition, the one waiting (if any), and its flags.
    Show(ToolArgs),
    /// Show what changed between a tool's approved definition and the one waiting.
    Diff(ToolArgs),
    /// Approve the definitions waiting for these tools (or vouch for flagged ones).
    Approve(ApproveArgs),
}

/// `tools list`.
#[derive(Args)]
pub struct ListArgs {
    /// Only this server's tools.
    server: Option<String>,
    /// Only tools whose status is not `approved`.
    #[arg(long)]
    pending: bool,
    /// One JSON object per tool.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `tools show|diff`.
#[derive(Args)]
pub struct ToolArgs {
    /// The server.
    server: String,
    /// The tool.
    tool: String,
    /// One JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `tools approve`.
#[derive(Args)]
pub struct ApproveArgs {
    /// The server.
    server: String,
    /// The tools (or `--all`).
    tools: Vec<String>,
    /// Every tool of the server that is changed or flagged.
    #[arg(long, conflicts_with = "tools")]
    all: bool,
    /// Approve only if the waiting definition's SHA-256 starts with this (as `diff` showed
    /// it): a definition that changed again after you looked is refused. One tool only.
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// One JSON object per approved tool.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs a tools subcommand and maps its outcome to the process exit code.
pub fn run(command: ToolsCommand) -> ExitCode {
    exit_code(match command {
        ToolsCommand::List(args) => list(&args),
        ToolsCommand::Show(args) => show(&args, false),
        ToolsCommand::Diff(args) => show(&args, true),
        ToolsCommand::Approve(args) => approve(&args),
    })
}

/// Where the pins are, and a runtime to reach them.
struct Target {
    store: SharedStore,
    runtime: tokio::runtime::Runtime,
}

/// The store the gateway pins tools in.
fn open(args: &StoreArgs) -> Result<Target, Failure> {
    let (store, runtime) = shared_store(args, "tool pins")?;
    Ok(Target { store, runtime })
}

fn all_pins(target: &Target) -> Result<Vec<ToolPin>, Failure> {
    target
        .runtime
        .block_on(target.store.tool_pins(None))
        .map_err(|e| Failure::Runtime(e.to_string()))
}

/// One pin as `--json` prints it.
fn pin_json(pin: &ToolPin, status: &str, flags: &[toolgate_risk::inspect::Flag]) -> Value {
    let mut v = json!({
        "server": pin.server,
        "tool": pin.tool,
        "status": status,
        "sha256": pin.sha256,
        "approved_by": pin.approved_by,
        "approved_at": pin.approved_at,
        "flags": pins::flags_json(flags),
    });
    if let Some(served) = &pin.served {
        v["served_sha256"] = json!(served.sha256);
        v["served_at"] = json!(served.seen_at);
    }
    v
}

fn list(args: &ListArgs) -> Result<ExitCode, Failure> {
    let target = open(&args.store)?;
    let all = all_pins(&target)?;
    let mut rows = Vec::new();
    for pin in &all {
        if args.server.as_ref().is_some_and(|s| *s != pin.server) {
            continue;
        }
        let (status, flags) = pins::status(pin, &pins::earlier(&all, pin));
        if args.pending && status == "approved" {
            continue;
        }
        rows.push((pin, status, flags));
    }
    if let Some(server) = &args.server {
        if !all.iter().any(|p| p.server == *server) {
            return Err(Failure::Usage(format!(
                "no tools of server {server:?} are pinned (the gateway pins a server's tools when it first lists them)"
            )));
        }
    }
    let mut out = io::stdout().lock();
    let write = |e| Failure::write("the tool list", e);
    if args.json {
        for (pin, status, flags) in &rows {
            writeln!(out, "{}", pin_json(pin, status, flags)).map_err(write)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let width = |f: &dyn Fn(&ToolPin) -> usize, title: &str| {
        rows.iter()
            .map(|(p, _, _)| f(p))
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let (ws, wt) = (
        width(&|p| p.server.len(), "SERVER"),
        width(&|p| p.tool.len(), "TOOL"),
    );
    writeln!(
        out,
        "{:ws$}  {:wt$}  {:8}  {:12}  {:12}  APPROVED BY",
        "SERVER", "TOOL", "STATUS", "SHA256", "SERVED"
    )
    .map_err(write)?;
    for (pin, status, flags) in &rows {
        let served = pin.served.as_ref().map_or("", |s| pins::short(&s.sha256));
        let flags = flags
            .iter()
            .map(|f| f.kind.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(",");
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!("  [{flags}]")
        };
        writeln!(
            out,
            "{:ws$}  {:wt$}  {:8}  {:12}  {:12}  {} {}{flags}",
            pin.server,
            pin.tool,
            status,
            pins::short(&pin.sha256),
            served,
            pin.approved_by,
            pin.approved_at
        )
        .map_err(write)?;
    }
    let waiting = rows.iter().filter(|(_, s, _)| *s != "approved").count();
    writeln!(out, "{} tools, {waiting} not approved", rows.len()).map_err(write)?;
    Ok(ExitCode::SUCCESS)
}

fn find<'a>(all: &'a [ToolPin], server: &str, tool: &str) -> Result<&'a ToolPin, Failure> {
    all.iter()
        .find(|p| p.server == server && p.tool == tool)
        .ok_or_else(|| {
            Failure::Usage(format!(
                "server {server:?} has no tool {tool:?} on record (`toolgate tools list {server}` shows what is pinned)"
            ))
        })
}

fn pretty(canonical: &str) -> String {
    serde_json::from_str::<Value>(canonical)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| canonical.to_owned())
}

/// `tools show` (`diff_only`: `tools diff`).
fn show(args: &ToolArgs, diff_only: bool) -> Result<ExitCode, Failure> {
    let target = open(&args.store)?;
    let all = all_pins(&target)?;
    let pin = find(&all, &args.server, &args.tool)?;
    let (status, flags) = pins::status(pin, &pins::earlier(&all, pin));
    let diff = pin
        .served
        .as_ref()
        .map(|s| pins::diff(&pin.definition, &s.definition));
    let mut out = io::stdout().lock();
    let write = |e| Failure::write("the tool", e);
    if args.json {
        let mut v = pin_json(pin, status, &flags);
        v["definition"] = serde_json::from_str(&pin.definition).unwrap_or(Value::Null);
        if let Some(served) = &pin.served {
            v["served_definition"] =
                serde_json::from_str(&served.definition).unwrap_or(Value::Null);
        }
        v["diff"] = json!(diff);
        writeln!(out, "{v}").map_err(write)?;
        return Ok(ExitCode::SUCCESS);
    }
    if diff_only {
        match (&diff, &pin.served) {
            (Some(diff), Some(served)) => {
                writeln!(
                    out,
                    "--- {}/{} approved {} ({} by {})",
                    pin.server,
                    pin.tool,
                    pins::short(&pin.sha256),
                    pin.approved_at,
                    pin.approved_by
                )
                .map_err(write)?;
                writeln!(
                    out,
                    "+++ {}/{} served   {} (since {})",
                    pin.server,
                    pin.tool,
                    pins::short(&served.sha256),
                    served.seen_at
                )
                .map_err(write)?;
                writeln!(out, "{diff}").map_err(write)?;
                writeln!(
                    out,
                    "approve it with: toolgate tools approve {} {} --sha256 {}",
                    pin.server,
                    pin.tool,
                    pins::short(&served.sha256)
                )
                .map_err(write)?;
            }
            _ => writeln!(
                out,
                "{}/{}: no change waiting; the server serves the approved definition",
                pin.server, pin.tool
            )
            .map_err(write)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{}/{}: {status}", pin.server, pin.tool).map_err(write)?;
    writeln!(
        out,
        "approved {} by {} at {}:",
        pins::short(&pin.sha256),
        pin.approved_by,
        pin.approved_at
    )
    .map_err(write)?;
    writeln!(out, "{}", pretty(&pin.definition)).map_err(write)?;
    if let (Some(served), Some(diff)) = (&pin.served, &diff) {
        writeln!(
            out,
            "waiting for approval: {} (served since {}), changes:",
            pins::short(&served.sha256),
            served.seen_at
        )
        .map_err(write)?;
        writeln!(out, "{diff}").map_err(write)?;
    }
    for flag in &flags {
        writeln!(
            out,
            "flag: {} at {}: {}",
            flag.kind.as_str(),
            flag.location,
            flag.evidence
        )
        .map_err(write)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn approve(args: &ApproveArgs) -> Result<ExitCode, Failure> {
    if !args.all && args.tools.is_empty() {
        return Err(Failure::Usage(
            "name the tools to approve, or pass --all".into(),
        ));
    }
    if args.sha256.is_some() && (args.all || args.tools.len() != 1) {
        return Err(Failure::Usage(
            "--sha256 approves one tool: name exactly one".into(),
        ));
    }
    let target = open(&args.store)?;
    let all = all_pins(&target)?;
    let tools: Vec<String> = if args.all {
        let pending: Vec<String> = all
            .iter()
            .filter(|p| p.server == args.server)
            .filter(|p| pins::status(p, &pins::earlier(&all, p)).0 != "approved")
            .map(|p| p.tool.clone())
            .collect();
        if !all.iter().any(|p| p.server == args.server) {
            return Err(Failure::Usage(format!(
                "no tools of server {:?} are pinned",
                args.server
            )));
        }
        pending
    } else {
        args.tools.clone()
    };
    let actor = actor();
    let mut out = io::stdout().lock();
    let write = |e| Failure::write("the approvals", e);
    let mut refused = 0;
    for tool in &tools {
        let approval =
            target
                .store
                .approve_tool(&args.server, tool, args.sha256.as_deref(), &actor);
        match target
            .runtime
            .block_on(approval)
            .map_err(|e| Failure::Runtime(e.to_string()))?
        {
            Ok(pin) => {
                if args.json {
                    writeln!(out, "{}", json!({"server": pin.server, "tool": pin.tool, "approved": true, "sha256": pin.sha256, "approved_by": pin.approved_by})).map_err(write)?;
                } else {
                    writeln!(
                        out,
                        "approved {}/{} ({}) as {}",
                        pin.server,
                        pin.tool,
                        pins::short(&pin.sha256),
                        pin.approved_by
                    )
                    .map_err(write)?;
                }
            }
            Err(why) => {
                refused += 1;
                if args.json {
                    writeln!(out, "{}", json!({"server": args.server, "tool": tool, "approved": false, "error": why.to_string()})).map_err(write)?;
                } else {
                    eprintln!("toolgate: {}/{tool}: {why}", args.server);
                }
            }
        }
    }
    if tools.is_empty() && !args.json {
        writeln!(
            out,
            "nothing to approve: every tool of {} serves its approved definition",
            args.server
        )
        .map_err(write)?;
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
