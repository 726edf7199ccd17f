//! `toolgate stdio` and `toolgate connect`: toolgate for clients that launch MCP servers as
//! local processes and speak MCP over their stdin and stdout (SPEC §2).
//!
//! `connect` is a stdio front end for a gateway at a URL ([`toolgate_gateway::bridge`]).
//! `stdio` runs a gateway in this process — the configuration's server (or the one quick
//! mode describes), on a loopback port of its own that only this process knows the token
//! for — and connects to it: the client gets exactly the HTTP gateway's decisions, audit
//! log, approvals and counters, because it *is* the HTTP gateway. Everything logged goes to
//! stderr; stdout carries the protocol alone.
//!
//! The child inherits the client's environment. The client's SIGTERM or SIGINT is passed on
//! to it; when the client closes stdin, the child's stdin is closed. toolgate then exits
//! with the child's status (128 + the signal's number if a signal ended it).
//!
//! Several `toolgate stdio` on one data directory (a desktop client starts one per server
//! entry) count their limits together through SQLite; none starts beside a `toolgate serve`
//! that keeps that directory's counters in memory — the error says to `connect` to it.

use crate::{init_logging, LogFormat};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use toolgate_gateway::bridge::{self, Target};
use toolgate_gateway::config::{self, Overrides, Settings};
use toolgate_gateway::grants;
use toolgate_gateway::stdio_upstream::StopSignal;

/// `toolgate stdio`.
#[derive(Args)]
pub(crate) struct StdioArgs {
    /// Configuration file (default: toolgate.toml in the working directory), when no
    /// --policy is given.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The configuration's server to run.
    #[arg(long)]
    server: Option<String>,
    /// The grant the client acts as (may be left out when exactly one grant has a policy
    /// for the server).
    #[arg(long)]
    grant: Option<String>,
    /// Quick mode: the policy for the server given after `--` (or by --upstream).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Where the store lives (default: the configuration's data_dir; in quick mode
    /// $XDG_DATA_HOME/toolgate, or ~/.local/share/toolgate).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log lines (on stderr) as text, or as one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Quick mode's upstream.
    #[command(flatten)]
    quick: crate::QuickUpstream,
}

/// `toolgate connect`.
#[derive(Args)]
pub(crate) struct ConnectArgs {
    /// The gateway's proxy URL, `…/mcp/<server>`.
    url: String,
    /// The grant token (default: the TOOLGATE_TOKEN environment variable, which keeps it
    /// out of process listings).
    #[arg(long)]
    token: Option<String>,
    /// A CA file for a gateway whose certificate a private CA signed.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Log lines (on stderr) as text, or as one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

pub(crate) fn connect(args: ConnectArgs) -> ExitCode {
    init_logging(args.log_format);
    let Some(token) = args
        .token
        .clone()
        .or_else(|| std::env::var("TOOLGATE_TOKEN").ok())
    else {
        eprintln!("toolgate connect: give the grant token with --token T or TOOLGATE_TOKEN");
        return ExitCode::from(2);
    };
    let target = Target {
        url: args.url.clone(),
        token,
        ca_file: args.ca_file.clone(),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let done = runtime.block_on(bridge::run(target, tokio::io::stdin(), tokio::io::stdout()));
    // Not waiting for the thread that reads stdin: it may be blocked in a read forever.
    runtime.shutdown_background();
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toolgate connect: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("toolgate: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

pub(crate) fn stdio(args: StdioArgs) -> ExitCode {
    init_logging(args.log_format);
    let (settings, server, token) = match prepare(&args) {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("toolgate stdio: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = runtime.block_on(run(settings, server, token));
    // Not waiting for the thread that reads stdin: after a signal it may be blocked in a
    // read forever.
    runtime.shutdown_background();
    code
}

/// The settings of the in-process gateway, the server's name and the private token.
fn prepare(args: &StdioArgs) -> Result<(Settings, String, String), String> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let token = grants::mint_token();
    let mut settings = match &args.policy {
        Some(policy) => {
            if args.config.is_some() || args.server.is_some() || args.grant.is_some() {
                return Err(
                    "--policy (quick mode) goes without --config, --server and --grant".into(),
                );
            }
            let mut settings = Settings::new(loopback);
            settings.data_dir = match &args.data_dir {
                Some(dir) => dir.clone(),
                None => default_data_dir()?,
            };
            settings.servers.push(crate::quick_server(&args.quick)?);
            let policy = config::load_policy(policy).map_err(|errors| errors.join("\n"))?;
            settings.grants.push(grants::quick_grant(
                "stdio",
                &token,
                crate::QUICK_SERVER,
                policy,
            ));
            settings
        }
        None => {
            if !args.quick.command.is_empty() || args.quick.upstream.is_some() {
                return Err("-- COMMAND and --upstream need --policy (quick mode); with a configuration, name its server with --server".into());
            }
            let path = args
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from("toolgate.toml"));
            let mut settings = config::load(&path).map_err(|errors| errors.to_string())?;
            let server = args
                .server
                .clone()
                .ok_or("--server NAME: which of the configuration's servers to run")?;
            if !settings.servers.iter().any(|s| s.name == server) {
                let known: Vec<&str> = settings.servers.iter().map(|s| s.name.as_str()).collect();
                return Err(format!(
                    "{}: no server named {server:?} (servers: {})",
                    path.display(),
                    known.join(", ")
                ));
            }
            let grant = pick_grant(&settings, &server, args.grant.as_deref())?;
            settings.override_with(Overrides {
                listen: Some(loopback),
                data_dir: args.data_dir.clone(),
                only_server: Some(server),
                local_token: Some((grant, grants::token_sha256(&token))),
                without_admin: true,
            });
            settings
        }
    };
    settings.exclusive_data_dir = false;
    let server = settings
        .servers
        .first()
        .map(|s| s.name.clone())
        .ok_or("no server to run")?;
    Ok((settings, server, token))
}

/// The grant a configuration's `stdio` client acts as: `--grant`, or the only grant with a
/// policy for `server`.
fn pick_grant(settings: &Settings, server: &str, wanted: Option<&str>) -> Result<String, String> {
    let candidates: Vec<&str> = settings
        .grants
        .iter()
        .filter(|g| g.policies.contains_key(server) || g.servers.contains(server))
        .map(|g| g.name.as_str())
        .collect();
    match wanted {
        Some(name) if candidates.contains(&name) => Ok(name.to_owned()),
        Some(name) => Err(format!(
            "grant {name:?} may not use server {server:?} (grants that may: {})",
            if candidates.is_empty() {
                "none".to_owned()
            } else {
                candidates.join(", ")
            }
        )),
        None => match candidates.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(format!(
                "no grant of the configuration may use server {server:?}"
            )),
            several => Err(format!(
                "several grants may use server {server:?} ({}): choose one with --grant",
                several.join(", ")
            )),
        },
    }
}

/// `$XDG_DATA_HOME/toolgate`, or `~/.local/share/toolgate`: a desktop client may start us
/// anywhere (often in `/`), so quick mode's store does not follow the working directory.
fn default_data_dir() -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or("neither XDG_DATA_HOME nor HOME is set: give --data-dir")?,
        )
        .join(".local/share"),
    };
    Ok(base.join("toolgate"))
}

/// Runs the gateway and the bridge until the client leaves or a signal comes; the exit code
/// is the child's.
async fn run(settings: Settings, server: String, token: String) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let running = match toolgate_gateway::start(settings).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("toolgate stdio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = Target {
        url: format!("http://{}/mcp/{server}", running.local_addr),
        token,
        ca_file: None,
    };
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("toolgate stdio: cannot listen for signals");
        return ExitCode::FAILURE;
    };
    let bridged = tokio::select! {
        done = bridge::run(target, tokio::io::stdin(), tokio::io::stdout()) => done,
        _ = term.recv() => {
            running.stop_children_with(StopSignal::Terminate);
            Ok(())
        }
        _ = int.recv() => {
            running.stop_children_with(StopSignal::Interrupt);
            Ok(())
        }
    };
    let status = running.shutdown_reporting_exit(&server).await;
    if let Err(e) = bridged {
        eprintln!("toolgate stdio: {e}");
        return ExitCode::FAILURE;
    }
    match status {
        Some(status) => ExitCode::from(exit_code(status)),
        None => ExitCode::SUCCESS,
    }
}

/// The shell's reading of an exit status: the code, or 128 + the signal's number.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from((128 + signal) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}
