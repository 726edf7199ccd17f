//! `toolgate grant create|list|revoke|rotate`: grants minted at runtime (SPEC §7), in the
//! embedded store — or, for a configuration in cluster mode (`[store] postgres_url`), in
//! PostgreSQL, shared by every replica. Running gateways pick each change up on their next
//! request; every change is recorded in the audit log's admin stream.
//!
//! A token is printed once, by `create` and `rotate`, and never stored: the store keeps
//! its SHA-256. `list` shows neither.

use crate::audit_cmd::{default_data_dir, existing_store, exit_code, Failure, StoreArgs};
use clap::{Args, Subcommand};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use toolgate_gateway::config::Settings;
use toolgate_gateway::grant_admin::{self, GrantError, NewGrant};
use toolgate_gateway::time::format_rfc3339_ms;
use toolgate_gateway::SharedStore;
use toolgate_store::{EmbeddedStore, PostgresAuditLog, StoredGrant, StoredPolicy};

/// `toolgate grant …`.
#[derive(Subcommand)]
pub enum GrantCommand {
    /// Mint a grant and print its token (once: only its SHA-256 is stored).
    Create(CreateArgs),
    /// List minted grants: names, servers, policies, expiry, status (never tokens).
    List(ListArgs),
    /// Revoke a grant: its token is refused from the next request on, open sessions too.
    Revoke(NameArgs),
    /// Give a grant a new token (printed once); the old one is refused from the next
    /// request on. Counters and audit history stay with the grant.
    Rotate(NameArgs),
}

/// `grant create`.
#[derive(Args)]
pub struct CreateArgs {
    /// The grant's name (letters, digits, `.`, `_`, `-`).
    #[arg(long)]
    name: String,
    /// The policy for a server, as SERVER=FILE; repeat for more servers.
    #[arg(long = "policy", value_name = "SERVER=FILE", required = true)]
    policies: Vec<String>,
    /// More servers the grant may use without a policy (refused there with rule
    /// `(no policy)`), comma-separated.
    #[arg(long, value_name = "S,…", value_delimiter = ',')]
    servers: Vec<String>,
    /// When the grant stops working: an RFC 3339 time, or a duration from now (`30d`).
    #[arg(long, value_name = "TIME|DURATION")]
    expires: Option<String>,
    /// A note for operators.
    #[arg(long)]
    note: Option<String>,
    /// Print the new grant as one JSON object (with its token).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `grant list`.
#[derive(Args)]
pub struct ListArgs {
    /// One JSON object per grant.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `grant revoke|rotate`.
#[derive(Args)]
pub struct NameArgs {
    /// The grant's name.
    name: String,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs a grant subcommand and maps its outcome to the process exit code.
pub fn run(command: GrantCommand) -> ExitCode {
    exit_code(match command {
        GrantCommand::Create(args) => create(&args),
        GrantCommand::List(args) => list(&args),
        GrantCommand::Revoke(args) => revoke(&args),
        GrantCommand::Rotate(args) => rotate(&args),
    })
}

/// Where the grants are, and the configuration (if one was found) to check them against.
struct Target {
    store: SharedStore,
    settings: Option<Settings>,
    /// Runs the store's work (PostgreSQL is asynchronous; so is the embedded store's API).
    runtime: tokio::runtime::Runtime,
}

/// Opens the store the grants live in. `create` may create it (the gateway may not have
/// run yet); the other commands need an existing one.
fn open(args: &StoreArgs, create: bool) -> Result<Target, Failure> {
    let settings =
        args.settings("pass --data-dir DIR without --config to use a store without it")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start a runtime: {e}")))?;
    // Cluster mode: the grants every replica shares, in PostgreSQL (unless --data-dir
    // points at an embedded store explicitly).
    let cluster = settings.as_ref().and_then(|s| s.postgres_url.clone());
    if let (Some(url), None) = (cluster, &args.data_dir) {
        let log = PostgresAuditLog::connect(&url).map_err(|e| Failure::Usage(e.to_string()))?;
        return Ok(Target {
            store: SharedStore::Postgres(Arc::new(log)),
            settings,
            runtime,
        });
    }
    let dir = match (&args.data_dir, &settings) {
        (Some(dir), _) => dir.clone(),
        (None, Some(settings)) => settings.data_dir.clone(),
        (None, None) => default_data_dir(),
    };
    if !create {
        existing_store(&dir, "store")?;
    }
    let store = EmbeddedStore::open(&dir).map_err(|e| Failure::Runtime(e.to_string()))?;
    Ok(Target {
        store: SharedStore::Embedded(Arc::new(store)),
        settings,
        runtime,
    })
}

fn create(args: &CreateArgs) -> Result<ExitCode, Failure> {
    let target = open(&args.store, true)?;
    let mut policies = BTreeMap::new();
    for pair in &args.policies {
        let (server, file) = pair
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("--policy {pair:?}: expected SERVER=FILE")))?;
        // The absolute path, so that the grant says which file it came from wherever it is
        // listed.
        let file = std::fs::canonicalize(file.trim()).map_err(|e| {
            Failure::Usage(format!("--policy {pair}: cannot read {}: {e}", file.trim()))
        })?;
        let document = std::fs::read_to_string(&file).map_err(|e| {
            Failure::Usage(format!(
                "--policy {pair}: cannot read {}: {e}",
                file.display()
            ))
        })?;
        let policy = StoredPolicy {
            source: file.display().to_string(),
            document,
        };
        if policies.insert(server.trim().to_owned(), policy).is_some() {
            return Err(Failure::Usage(format!(
                "--policy: two policies for server {:?}",
                server.trim()
            )));
        }
    }
    let expires_unix = args
        .expires
        .as_deref()
        .map(|text| {
            grant_admin::parse_expiry(text).map_err(|e| Failure::Usage(format!("--expires {e}")))
        })
        .transpose()?;
    let grant = NewGrant {
        name: args.name.clone(),
        policies,
        servers: args.servers.clone(),
        expires_unix,
        note: args.note.clone(),
    };
    let (grant, token) = target
        .runtime
        .block_on(grant_admin::mint(
            &target.store,
            target
                .settings
                .as_ref()
                .map(grant_admin::InForce::of)
                .as_ref(),
            grant,
            &actor(),
        ))
        .map_err(failure)?;
    print_token(&grant, &token, args.json, "minted")
}

fn list(args: &ListArgs) -> Result<ExitCode, Failure> {
    let target = open(&args.store, false)?;
    let grants = target
        .runtime
        .block_on(target.store.grants())
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let mut out = io::stdout().lock();
    let write = |e| Failure::write("the grants", e);
    if args.json {
        for grant in &grants {
            writeln!(out, "{}", grant_admin::listing(grant)).map_err(write)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if grants.is_empty() {
        writeln!(
            out,
            "no grants minted (grants declared in the configuration are not listed here)"
        )
        .map_err(write)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = grants
        .iter()
        .map(|g| {
            let servers: Vec<String> = g
                .policies
                .keys()
                .cloned()
                .chain(g.servers.iter().map(|s| format!("{s} (no policy)")))
                .collect();
            [
                g.name.clone(),
                grant_admin::status(g).to_owned(),
                servers.join(", "),
                g.expires_unix
                    .map(|t| format_rfc3339_ms(t * 1000))
                    .unwrap_or_else(|| "never".into()),
                g.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["NAME", "STATUS", "SERVERS", "EXPIRES", "NOTE"];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end()).map_err(write)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(args: &NameArgs) -> Result<ExitCode, Failure> {
    let target = open(&args.store, false)?;
    let grant = target
        .runtime
        .block_on(grant_admin::revoke(&target.store, &args.name, &actor()))
        .map_err(failure)?;
    let mut out = io::stdout().lock();
    let line = if args.json {
        json!({"name": grant.name, "status": grant_admin::status(&grant), "revoked": grant.revoked_ts})
            .to_string()
    } else {
        format!(
            "grant {:?} revoked: its token is refused from the next request on",
            grant.name
        )
    };
    writeln!(out, "{line}").map_err(|e| Failure::write("the outcome", e))?;
    Ok(ExitCode::SUCCESS)
}

fn rotate(args: &NameArgs) -> Result<ExitCode, Failure> {
    let target = open(&args.store, false)?;
    let (grant, token) = target
        .runtime
        .block_on(grant_admin::rotate(&target.store, &args.name, &actor()))
        .map_err(failure)?;
    print_token(
        &grant,
        &token,
        args.json,
        "rotated (the old token is refused from the next request on)",
    )
}

/// A refused or failed change: bad input is a usage error (exit 2), the rest exit 1.
fn failure(error: GrantError) -> Failure {
    match error {
        GrantError::Invalid(why) => Failure::Usage(why),
        other => Failure::Runtime(other.to_string()),
    }
}

/// Who runs this command, for the admin stream.
pub(crate) fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_default();
    if user.is_empty() {
        "cli".into()
    } else {
        format!("cli:{user}")
    }
}

/// Prints a grant's new token: the one time anyone sees it.
fn print_token(
    grant: &StoredGrant,
    token: &str,
    json: bool,
    what: &str,
) -> Result<ExitCode, Failure> {
    let mut out = io::stdout().lock();
    let text = if json {
        grant_admin::with_token(grant, token).to_string()
    } else {
        format!(
            "grant {:?} {what}.\nIts token is shown only this once; store it now:\n{token}",
            grant.name
        )
    };
    writeln!(out, "{text}").map_err(|e| Failure::write("the token", e))?;
    Ok(ExitCode::SUCCESS)
}
