//! `toolgate policy check|test|replay`: a policy is checked like code, tested against
//! example calls, and replayed against recorded history before it goes live (SPEC §2).

use crate::audit_cmd::{exit_code, open_store, Failure, FilterArgs, StoreArgs};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::progress::Progress;
use toolgate_gateway::config;
use toolgate_policy::{cases, Identity, Outcome, Policy, ToolCall};
use toolgate_store::audit::MergedRecord;

/// `toolgate policy …`.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files, reporting every error with its JSON Pointer.
    Check {
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run example calls against a policy; exit 1 with expected against actual for each
    /// case that does not hold.
    Test {
        /// The policy.
        policy: PathBuf,
        /// The cases: `{"cases": [{"name", "tool", "arguments", "identity", "expect":
        /// {"decision", "rule", "message"}}]}` or a bare array of cases; JSON, or YAML when
        /// the file is named `.yaml` or `.yml`.
        cases: PathBuf,
    },
    /// Re-decide recorded calls under a proposed policy and print each whose decision would
    /// change (or that depends on argument values the audit log does not hold).
    Replay(Box<ReplayArgs>),
}

/// `toolgate policy replay`.
#[derive(Args)]
pub struct ReplayArgs {
    /// The proposed policy.
    policy: PathBuf,
    /// Which recorded calls (the filters of `audit query`).
    #[command(flatten)]
    filter: FilterArgs,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Where the audit log is.
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs a policy subcommand.
pub fn run(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Check { files } => check(&files),
        PolicyCommand::Test { policy, cases } => exit_code(test(&policy, &cases)),
        PolicyCommand::Replay(args) => exit_code(replay(&args)),
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for file in files {
        match config::load_policy(file) {
            Ok(p) => println!("{}: ok (version {})", file.display(), p.version),
            Err(errors) => {
                ok = false;
                for e in errors {
                    println!("{e}");
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The policy at `path`, or every reason it does not load.
fn load(path: &Path) -> Result<Arc<Policy>, Failure> {
    config::load_policy(path)
        .map(|p| p.policy)
        .map_err(|errors| Failure::Usage(format!("policy rejected:\n{}", errors.join("\n"))))
}

/// `policy test`: every case, `ok` or `FAIL` with the differences; exit 1 if any failed.
fn test(policy_path: &Path, cases_path: &Path) -> Result<ExitCode, Failure> {
    let policy = load(policy_path)?;
    let bytes = std::fs::read(cases_path).map_err(|e| {
        Failure::Usage(format!(
            "{}: cannot read the cases: {e}",
            cases_path.display()
        ))
    })?;
    let yaml = cases_path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let cases = if yaml {
        std::str::from_utf8(&bytes)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(crate::yaml::to_json)
            .and_then(cases::cases_from_value)
    } else {
        cases::parse_cases(&bytes)
    }
    .map_err(|e| Failure::Usage(format!("{}: {e}", cases_path.display())))?;
    let mut out = io::stdout().lock();
    let mut failed = 0;
    for case in &cases {
        let mismatches = cases::check(&policy, case);
        let line = if mismatches.is_empty() {
            format!("ok    {}", case.name)
        } else {
            failed += 1;
            let mut text = format!("FAIL  {}  ({} {})", case.name, case.tool, case.arguments);
            for m in &mismatches {
                text.push_str(&format!(
                    "\n        {:<9} expected {:?}\n        {:<9}      got {:?}",
                    m.field, m.expected, "", m.actual
                ));
            }
            text
        };
        writeln!(out, "{line}").map_err(|e| Failure::write("stdout", e))?;
    }
    writeln!(
        out,
        "{} cases: {} passed, {failed} failed",
        cases.len(),
        cases.len() - failed
    )
    .map_err(|e| Failure::write("stdout", e))?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What replaying one recorded call found.
enum Replayed {
    /// The proposed policy decides as the recorded one did.
    Same,
    /// It decides otherwise: the new decision and its rule.
    Changed { decision: String, rule: String },
    /// It reads argument values, and the record holds none (`audit.capture` was not
    /// "full").
    CannotTell,
}

/// The proposed policy's decision for a recorded call.
fn replay_one(policy: &Policy, record: &MergedRecord) -> Option<Replayed> {
    let call = &record.call;
    let tool = call.tool.as_deref()?;
    if call.method != "tools/call" {
        return None;
    }
    let arguments = match &call.args {
        Some(args) => args.clone(),
        None if policy.reads_arguments(tool) => return Some(Replayed::CannotTell),
        None => Value::Object(Map::new()),
    };
    // Claims are not recorded: a predicate on `identity.claims` sees none.
    let identity = Identity {
        grant: call.grant.clone(),
        sub: (call.identity != call.grant).then(|| call.identity.clone()),
        ..Identity::default()
    };
    let decision = policy.evaluate(&ToolCall {
        tool,
        arguments: &arguments,
        identity: &identity,
    });
    // A call refused by a limit passed the policy: limits are counted, not replayed.
    let recorded = match call.decision.as_str() {
        "rate_limited" => Outcome::Allow.as_str(),
        other => other,
    };
    Some(if decision.outcome.as_str() == recorded {
        Replayed::Same
    } else {
        Replayed::Changed {
            decision: decision.outcome.as_str().to_owned(),
            rule: decision.rule,
        }
    })
}

/// `policy replay`: one line per recorded call whose decision would change or cannot be
/// told; a summary on stderr.
fn replay(args: &ReplayArgs) -> Result<ExitCode, Failure> {
    let policy = load(&args.policy)?;
    let store = open_store(&args.store)?;
    let records = store
        .query(&args.filter.filter())
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let mut out = io::stdout().lock();
    let (mut replayed, mut changed, mut unknown) = (0, 0, 0);
    let mut progress = Progress::new("replaying", Some(records.len()));
    for record in &records {
        progress.advance(1);
        let Some(found) = replay_one(&policy, record) else {
            continue;
        };
        replayed += 1;
        let call = &record.call;
        let tool = call.tool.as_deref().unwrap_or_default();
        let (new, rule) = match &found {
            Replayed::Same => continue,
            Replayed::Changed { decision, rule } => {
                changed += 1;
                (Some(decision.as_str()), rule.as_str())
            }
            Replayed::CannotTell => {
                unknown += 1;
                (None, "")
            }
        };
        let line = if args.json {
            json!({
                "ts": call.ts, "request_id": call.request_id, "grant": call.grant,
                "identity": call.identity, "server": call.server, "tool": tool,
                "decision": call.decision, "new_decision": new, "new_rule": rule,
                "cannot_tell": new.is_none(),
            })
            .to_string()
        } else {
            let what = match new {
                Some(new) if rule.is_empty() => new.to_owned(),
                Some(new) => format!("{new} ({rule})"),
                None => {
                    "cannot tell: depends on argument values the audit log does not hold".to_owned()
                }
            };
            format!(
                "{} {} {} {}: {} -> {what}",
                call.ts, call.grant, call.server, tool, call.decision
            )
        };
        writeln!(out, "{line}").map_err(|e| Failure::write("stdout", e))?;
    }
    out.flush().map_err(|e| Failure::write("stdout", e))?;
    drop(progress);
    eprintln!(
        "toolgate: {replayed} recorded calls replayed: {changed} would be decided otherwise, \
         {unknown} cannot tell, {} unchanged",
        replayed - changed - unknown
    );
    Ok(ExitCode::SUCCESS)
}
