//! `toolgate`: the command line. Thin by design — parsing, wiring, printing; the work
//! happens in `toolgate-gateway` and `toolgate-policy`.
#![forbid(unsafe_code)]

mod approvals_cmd;
mod audit_cmd;
mod grant_cmd;
mod install_cmd;
mod policy_cmd;
mod progress;
mod scan_cmd;
mod stdio_cmd;
mod tools_cmd;
mod yaml;

use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use toolgate_gateway::config::{self, ServerSpec, Settings, UpstreamSpec};
use toolgate_gateway::grants;

/// A policy gateway for the Model Context Protocol.
#[derive(Parser)]
#[command(name = "toolgate", version, about)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Work with policy documents.
    Policy {
        /// What to do with policies.
        #[command(subcommand)]
        command: policy_cmd::PolicyCommand,
    },
    /// Read the audit log: query, verify its hash chains, export, follow.
    Audit {
        /// What to do with the audit log.
        #[command(subcommand)]
        command: audit_cmd::AuditCommand,
    },
    /// List a server's tools, classified by what they can do; write a starter policy.
    Scan(scan_cmd::ScanArgs),
    /// Decide calls held for human approval: list, show, approve, deny.
    Approvals {
        /// What to do with approval requests.
        #[command(subcommand)]
        command: approvals_cmd::ApprovalsCommand,
    },
    /// Pinned tool definitions: list them, show and diff changes, approve them.
    Tools {
        /// What to do with pinned tools.
        #[command(subcommand)]
        command: tools_cmd::ToolsCommand,
    },
    /// Mint, list, revoke and rotate grants in the embedded store.
    Grant {
        /// What to do with grants.
        #[command(subcommand)]
        command: grant_cmd::GrantCommand,
    },
    /// Speak MCP over stdin/stdout to a client that launched us, enforcing the policy on the
    /// server we run (a command after `--`, or a configured server).
    Stdio(stdio_cmd::StdioArgs),
    /// Speak MCP over stdin/stdout to a client, relaying to a remote toolgate's URL.
    Connect(stdio_cmd::ConnectArgs),
    /// Route a desktop client's MCP server entry through `toolgate stdio`, or list which
    /// entries are not yet.
    Install(install_cmd::InstallArgs),
}

/// `toolgate serve`.
#[derive(Args)]
struct ServeArgs {
    /// Configuration file (default: toolgate.toml in the working directory).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the configuration's data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Quick mode: the policy for the single server `default`.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Listen address (quick mode default 127.0.0.1:8080; overrides the config).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log lines as text, or as one JSON object per line for log pipelines.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Quick mode's upstream.
    #[command(flatten)]
    quick: QuickUpstream,
}

/// Quick mode's one server (`serve` and `stdio`): an HTTP URL, or a command after `--`.
#[derive(Args)]
struct QuickUpstream {
    /// Quick mode: the Streamable HTTP URL of the upstream.
    #[arg(long)]
    upstream: Option<String>,
    /// Quick mode: per-request upstream timeout.
    #[arg(long, default_value = "60s")]
    timeout: String,
    /// Quick mode: the stdio upstream command and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy { command } => policy_cmd::run(command),
        Command::Serve(args) => serve(args),
        Command::Audit { command } => audit_cmd::run(command),
        Command::Grant { command } => grant_cmd::run(command),
        Command::Scan(args) => scan_cmd::run(args),
        Command::Tools { command } => tools_cmd::run(command),
        Command::Approvals { command } => approvals_cmd::run(command),
        Command::Stdio(args) => stdio_cmd::stdio(args),
        Command::Connect(args) => stdio_cmd::connect(args),
        Command::Install(args) => install_cmd::run(args),
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, fields, message).
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOOLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person: a desktop client that launched `toolgate stdio` keeps
        // stderr in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The one server of quick mode (`serve` and `stdio`), named `default`.
fn quick_server(quick: &QuickUpstream) -> Result<ServerSpec, String> {
    let timeout =
        toolgate_policy::duration::parse(&quick.timeout).map_err(|e| format!("--timeout: {e}"))?;
    let upstream = match (quick.upstream.as_deref(), quick.command.split_first()) {
        (Some(url), None) => UpstreamSpec::Http {
            url: url.to_owned(),
            headers: Vec::new(),
            ca_file: None,
            connect_timeout: Duration::from_secs(10),
        },
        (None, Some((command, rest))) => UpstreamSpec::Stdio {
            command: command.clone(),
            args: rest.to_vec(),
            env: Vec::new(),
        },
        _ => {
            return Err(
                "quick mode needs exactly one of --upstream URL and -- COMMAND ARGS…".into(),
            )
        }
    };
    Ok(ServerSpec {
        name: QUICK_SERVER.into(),
        upstream,
        timeout,
        shadow: false,
        fail_open: false,
        max_message_bytes: toolgate_gateway::config::DEFAULT_MAX_MESSAGE_BYTES,
    })
}

/// The server of quick mode.
const QUICK_SERVER: &str = "default";

/// Builds the settings of quick mode: one server `default`, one freshly minted grant.
fn quick_settings(
    args: &ServeArgs,
    policy: &std::path::Path,
) -> Result<(Settings, String), String> {
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let mut settings = Settings::new(listen);
    if let Some(dir) = &args.data_dir {
        settings.data_dir = dir.clone();
    }
    settings.servers.push(quick_server(&args.quick)?);
    let policy = config::load_policy(policy).map_err(|errors| errors.join("\n"))?;
    let token = grants::mint_token();
    settings
        .grants
        .push(grants::quick_grant("quick", &token, QUICK_SERVER, policy));
    Ok((settings, token))
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    let quick = args.policy.clone();
    let prepared = match &quick {
        Some(policy) => quick_settings(&args, policy).map(|(s, t)| (s, Some(t))),
        None => {
            if args.quick.upstream.is_some() || !args.quick.command.is_empty() {
                Err("--upstream and -- COMMAND need --policy (quick mode); with a config file, configure [servers] instead".to_owned())
            } else {
                let path = args
                    .config
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("toolgate.toml"));
                config::load(&path)
                    .map(|mut s| {
                        s.override_with(config::Overrides {
                            listen: args.listen,
                            data_dir: args.data_dir.clone(),
                            ..config::Overrides::default()
                        });
                        (s, None)
                    })
                    .map_err(|errors| {
                        let dir = args
                            .data_dir
                            .clone()
                            .unwrap_or_else(|| config::data_dir_hint(&path));
                        match toolgate_gateway::record_rejected_config(&dir, &path, &errors.0) {
                            Ok(true) => format!(
                                "{errors}\n(recorded in the audit log in {})",
                                dir.display()
                            ),
                            Ok(false) => errors.to_string(),
                            Err(e) => {
                                format!("{errors}\n(could not record this in the audit log: {e})")
                            }
                        }
                    })
            }
        }
    };
    let (settings, token) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("toolgate: configuration rejected:\n{e}");
            return ExitCode::from(2);
        }
    };
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("toolgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let servers: Vec<String> = settings.servers.iter().map(|s| s.name.clone()).collect();
        let running = match toolgate_gateway::start(settings).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("toolgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = running.local_addr;
        let mut out = std::io::stdout().lock();
        for name in &servers {
            let _ = writeln!(out, "url: http://{addr}/mcp/{name}");
        }
        if let Some(token) = token {
            let _ = writeln!(out, "token: {token}");
        }
        let _ = out.flush();
        drop(out);
        wait_for_signal(&running).await;
        tracing::info!("shutting down: draining in-flight requests");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Waits for SIGTERM or Ctrl-C; SIGHUP meanwhile reloads the configuration and policies.
async fn wait_for_signal(running: &toolgate_gateway::Running) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        let mut hangup = signal(SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
                Some(()) = async {
                    match &mut hangup {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!("SIGHUP: reloading the configuration and policies");
                    running.reload();
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = running;
        let _ = tokio::signal::ctrl_c().await;
    }
}
