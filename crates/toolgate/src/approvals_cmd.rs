//! `toolgate approvals list|show|approve|deny`: deciding calls held for human approval
//! (SPEC §6). The agent that made a held call got its approval id; once a person approves
//! it here, the agent's retry of the identical call runs. Decisions (who, when, why) are
//! recorded in the audit log's admin stream; running gateways see them on the retry. In
//! cluster mode the requests live in PostgreSQL, so any replica honours the decision.

use crate::audit_cmd::{exit_code, shared_store, Failure, StoreArgs};
use crate::grant_cmd::actor;
use clap::{Args, Subcommand};
use std::io::{self, Write};
use std::process::ExitCode;
use toolgate_gateway::approvals::{self, Approvals};
use toolgate_gateway::time::now_unix_ms;
use toolgate_store::{ApprovalRequest, ApprovalStatus};

/// `toolgate approvals …`.
#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// List approval requests: pending ones, or all with `--all`.
    List(ListArgs),
    /// Show one request: the call (with its arguments), its status and its decision.
    Show(IdArgs),
    /// Approve a pending request: the agent's retry of that exact call runs.
    Approve(DecideArgs),
    /// Deny a pending request: the agent's retry is refused, with the reason.
    Deny(DecideArgs),
}

/// `approvals list`.
#[derive(Args)]
pub struct ListArgs {
    /// Every request, not only pending ones.
    #[arg(long)]
    all: bool,
    /// One JSON object per request.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `approvals show`.
#[derive(Args)]
pub struct IdArgs {
    /// The request's id (`apr_…`).
    id: String,
    /// One JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `approvals approve|deny`.
#[derive(Args)]
pub struct DecideArgs {
    /// The request's id (`apr_…`).
    id: String,
    /// Why (recorded, and told to the agent on a denial).
    #[arg(long)]
    reason: Option<String>,
    /// Print the request as decided, as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs an approvals subcommand and maps its outcome to the process exit code.
pub fn run(command: ApprovalsCommand) -> ExitCode {
    exit_code(match command {
        ApprovalsCommand::List(args) => list(&args),
        ApprovalsCommand::Show(args) => show(&args),
        ApprovalsCommand::Approve(args) => decide(&args, true),
        ApprovalsCommand::Deny(args) => decide(&args, false),
    })
}

/// Where the approvals are, and a runtime to reach them.
struct Target {
    approvals: Approvals,
    runtime: tokio::runtime::Runtime,
}

/// The store the gateway keeps approvals in.
fn open(args: &StoreArgs) -> Result<Target, Failure> {
    let (store, runtime) = shared_store(args, "approvals")?;
    Ok(Target {
        approvals: Approvals::new(store),
        runtime,
    })
}

fn all(target: &Target) -> Result<Vec<ApprovalRequest>, Failure> {
    target
        .runtime
        .block_on(target.approvals.list())
        .map_err(|e| Failure::Runtime(e.to_string()))
}

fn list(args: &ListArgs) -> Result<ExitCode, Failure> {
    let target = open(&args.store)?;
    let now = now_unix_ms();
    let requests: Vec<ApprovalRequest> = all(&target)?
        .into_iter()
        .filter(|r| args.all || r.status_at(now) == ApprovalStatus::Pending)
        .collect();
    let mut out = io::stdout().lock();
    let write = |e| Failure::write("the approvals", e);
    if args.json {
        for request in &requests {
            writeln!(out, "{}", approvals::describe(request, now)).map_err(write)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<28}  {:<9}  {:<12}  {:<14}  {:<20}  CREATED",
        "ID", "STATUS", "GRANT", "SERVER", "TOOL"
    )
    .map_err(write)?;
    for request in &requests {
        writeln!(
            out,
            "{:<28}  {:<9}  {:<12}  {:<14}  {:<20}  {}",
            request.id,
            request.status_at(now).as_str(),
            request.key.grant,
            request.key.server,
            request.key.tool,
            toolgate_gateway::time::format_rfc3339_ms(request.created_ms)
        )
        .map_err(write)?;
    }
    if requests.is_empty() && !args.all {
        writeln!(out, "no approval request is pending").map_err(write)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn find(target: &Target, id: &str) -> Result<ApprovalRequest, Failure> {
    all(target)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| Failure::Usage(format!("no approval request has the id {id:?}")))
}

fn show(args: &IdArgs) -> Result<ExitCode, Failure> {
    let target = open(&args.store)?;
    let request = find(&target, &args.id)?;
    let described = approvals::describe(&request, now_unix_ms());
    let mut out = io::stdout().lock();
    let write = |e| Failure::write("the approval", e);
    if args.json {
        writeln!(out, "{described}").map_err(write)?;
    } else {
        let text = serde_json::to_string_pretty(&described).unwrap_or_default();
        writeln!(out, "{text}").map_err(write)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(args: &DecideArgs, approve: bool) -> Result<ExitCode, Failure> {
    let target = open(&args.store)?;
    let decided = target
        .runtime
        .block_on(
            target
                .approvals
                .decide(&args.id, approve, &actor(), args.reason.as_deref()),
        )
        .map_err(|e| Failure::Runtime(e.to_string()))?
        .map_err(|refused| Failure::Runtime(refused.to_string()))?;
    let mut out = io::stdout().lock();
    let write = |e| Failure::write("the decision", e);
    if args.json {
        writeln!(out, "{}", approvals::describe(&decided, now_unix_ms())).map_err(write)?;
    } else {
        writeln!(
            out,
            "{} {} ({} on {}): the agent's retry of that call {}",
            if approve { "approved" } else { "denied" },
            decided.id,
            decided.key.tool,
            decided.key.server,
            if approve { "runs" } else { "is refused" }
        )
        .map_err(write)?;
    }
    Ok(ExitCode::SUCCESS)
}
