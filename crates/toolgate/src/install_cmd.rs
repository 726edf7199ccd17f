//! `toolgate install`: routes a desktop client's existing MCP server entry through
//! `toolgate stdio` (SPEC §2), or lists which entries are not yet routed.
//!
//! A routed entry keeps its name, `type`, `env` and every other key; its command becomes
//! this toolgate binary (by absolute path: desktop clients seldom share a shell's PATH)
//! and its arguments `stdio --policy <absolute policy path> -- <original command and
//! args>`. Without `--write` the whole new configuration is printed; with it, the file is
//! first copied to `<file>.bak`, then replaced. Only plain JSON is rewritten: a file with
//! comments (VS Code accepts JSONC) is refused, since rewriting it would drop them.

use clap::{Args, ValueEnum};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use toolgate_gateway::config;

/// A desktop client whose configuration format toolgate knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Client {
    /// Claude Desktop: `$XDG_CONFIG_HOME/Claude/claude_desktop_config.json`, `mcpServers`.
    ClaudeDesktop,
    /// Cursor: `~/.cursor/mcp.json`, `mcpServers`.
    Cursor,
    /// VS Code: `./.vscode/mcp.json`, `servers`.
    Vscode,
    /// Claude Code: `./.mcp.json`, `mcpServers`.
    ClaudeCode,
}

impl Client {
    /// The object of the configuration that holds the server entries.
    fn servers_key(self) -> &'static str {
        match self {
            Client::Vscode => "servers",
            _ => "mcpServers",
        }
    }

    /// Where the client keeps its configuration unless told otherwise.
    fn default_path(self) -> Result<PathBuf, String> {
        let home = || {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| "HOME is not set: give --client-config PATH".to_owned())
        };
        Ok(match self {
            Client::ClaudeDesktop => std::env::var_os("XDG_CONFIG_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .map_or_else(|| home().map(|h| h.join(".config")), Ok)?
                .join("Claude/claude_desktop_config.json"),
            Client::Cursor => home()?.join(".cursor/mcp.json"),
            Client::Vscode => PathBuf::from(".vscode/mcp.json"),
            Client::ClaudeCode => PathBuf::from(".mcp.json"),
        })
    }
}

/// `toolgate install`.
#[derive(Args)]
pub(crate) struct InstallArgs {
    /// Which client's configuration.
    #[arg(long, value_enum)]
    client: Client,
    /// The server entry to route through toolgate.
    #[arg(long, required_unless_present = "list", conflicts_with = "list")]
    server: Option<String>,
    /// The policy toolgate enforces on it.
    #[arg(long, required_unless_present = "list", conflicts_with = "list")]
    policy: Option<PathBuf>,
    /// The client's configuration file (default: where the client keeps it).
    #[arg(long)]
    client_config: Option<PathBuf>,
    /// Apply the change (the file is first copied to <file>.bak) instead of printing the
    /// new configuration.
    #[arg(long, conflicts_with = "list")]
    write: bool,
    /// List the entries and whether each is routed through toolgate.
    #[arg(long)]
    list: bool,
    /// With --list: one JSON object per line.
    #[arg(long, requires = "list")]
    json: bool,
}

pub(crate) fn run(args: InstallArgs) -> ExitCode {
    match install(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toolgate install: {e}");
            ExitCode::from(2)
        }
    }
}

fn install(args: &InstallArgs) -> Result<(), String> {
    let path = match &args.client_config {
        Some(path) => path.clone(),
        None => args.client.default_path()?,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: cannot read the client configuration: {e}",
            path.display()
        )
    })?;
    let mut document: Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not plain JSON ({e}); toolgate rewrites only plain JSON (comments would be lost)",
            path.display()
        )
    })?;
    let key = args.client.servers_key();
    let entries = document
        .get_mut(key)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("{}: no \"{key}\" object of server entries", path.display()))?;
    if args.list {
        return list(entries, args.json);
    }
    let (Some(server), Some(policy)) = (&args.server, &args.policy) else {
        return Err("--server NAME and --policy FILE are needed (or --list)".into());
    };
    let policy = std::fs::canonicalize(policy).map_err(|e| format!("{}: {e}", policy.display()))?;
    config::load_policy(&policy).map_err(|errors| {
        format!(
            "{}: not a valid policy:\n  {}",
            policy.display(),
            errors.join("\n  ")
        )
    })?;
    let toolgate = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| format!("cannot tell where this toolgate binary is: {e}"))?;
    let names: Vec<String> = entries.keys().cloned().collect();
    let entry = entries.get_mut(server).ok_or_else(|| {
        format!(
            "{}: no server entry named {server:?} (entries: {})",
            path.display(),
            names.join(", ")
        )
    })?;
    if is_protected(entry) {
        eprintln!("toolgate install: {server:?} already runs through toolgate; nothing to change");
        return Ok(());
    }
    route(entry, &toolgate, &policy).map_err(|e| format!("{}: {server:?}: {e}", path.display()))?;
    let mut updated = serde_json::to_string_pretty(&document).unwrap_or_default();
    updated.push('\n');
    if !args.write {
        print!("{updated}");
        return Ok(());
    }
    let backup = backup_path(&path);
    std::fs::copy(&path, &backup)
        .map_err(|e| format!("cannot keep a backup at {}: {e}", backup.display()))?;
    write_replacing(&path, updated.as_bytes())?;
    eprintln!(
        "toolgate install: {server:?} now runs through toolgate stdio with {} ({} kept as {})",
        policy.display(),
        path.display(),
        backup.display()
    );
    Ok(())
}

/// `--list`: each entry and whether it is routed through toolgate.
fn list(entries: &Map<String, Value>, json: bool) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let width = entries.keys().map(String::len).max().unwrap_or(0).max(6);
    for (name, entry) in entries {
        let protected = is_protected(entry);
        let line = if json {
            serde_json::json!({"server": name, "protected": protected}).to_string()
        } else {
            format!(
                "{name:<width$}  {}",
                if protected {
                    "protected"
                } else if entry.get("command").is_none() {
                    "not protected (a remote server: point it at a toolgate serve)"
                } else {
                    "not protected"
                }
            )
        };
        writeln!(out, "{line}").map_err(|e| format!("cannot write the list: {e}"))?;
    }
    Ok(())
}

/// Whether an entry already runs through toolgate (`toolgate stdio …` or `toolgate
/// connect …`).
fn is_protected(entry: &Value) -> bool {
    let command = entry.get("command").and_then(Value::as_str).unwrap_or("");
    let program = Path::new(command).file_name().and_then(|n| n.to_str());
    let first = entry
        .pointer("/args/0")
        .and_then(Value::as_str)
        .unwrap_or("");
    program == Some("toolgate") && matches!(first, "stdio" | "connect")
}

/// Rewrites a stdio entry to run `toolgate stdio --policy POLICY -- <command> <args>`.
fn route(entry: &mut Value, toolgate: &Path, policy: &Path) -> Result<(), String> {
    let object = entry.as_object_mut().ok_or("the entry is not an object")?;
    let Some(command) = object
        .get("command")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Err(if object.contains_key("url") {
            "a remote (url) server: it has no process to wrap; point the client at a toolgate serve for it".into()
        } else {
            "the entry has no command".into()
        });
    };
    let original_args: Vec<Value> = match object.get("args") {
        None => Vec::new(),
        Some(Value::Array(args)) if args.iter().all(Value::is_string) => args.clone(),
        Some(_) => return Err("its args are not a list of strings".into()),
    };
    let path_text = |p: &Path| -> Result<Value, String> {
        p.to_str()
            .map(|s| Value::String(s.to_owned()))
            .ok_or_else(|| format!("{} is not UTF-8", p.display()))
    };
    let mut args = vec![
        Value::String("stdio".into()),
        Value::String("--policy".into()),
        path_text(policy)?,
        Value::String("--".into()),
        Value::String(command),
    ];
    args.extend(original_args);
    object.insert("command".into(), path_text(toolgate)?);
    object.insert("args".into(), Value::Array(args));
    Ok(())
}

fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".bak");
    PathBuf::from(name)
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so that
/// the client never reads half a configuration.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".toolgate-new");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_routed_entry_keeps_its_keys_and_wraps_its_command() {
        let mut entry = json!({"type": "stdio", "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "/srv"],
            "env": {"DEBUG": "1"}, "cwd": "/tmp"});
        assert!(!is_protected(&entry));
        route(
            &mut entry,
            Path::new("/opt/bin/toolgate"),
            Path::new("/p/files.json"),
        )
        .unwrap();
        assert_eq!(
            entry,
            json!({"type": "stdio", "command": "/opt/bin/toolgate",
                "args": ["stdio", "--policy", "/p/files.json", "--", "npx", "-y",
                         "@modelcontextprotocol/server-filesystem", "/srv"],
                "env": {"DEBUG": "1"}, "cwd": "/tmp"})
        );
        assert!(is_protected(&entry));
        assert!(is_protected(
            &json!({"command": "toolgate", "args": ["connect", "https://gw/mcp/x"]})
        ));
        assert!(!is_protected(
            &json!({"command": "toolgate-helper", "args": ["stdio"]})
        ));
    }

    #[test]
    fn what_cannot_be_routed_says_why() {
        let toolgate = Path::new("/t");
        let policy = Path::new("/p");
        let remote = route(&mut json!({"url": "https://x/mcp"}), toolgate, policy).unwrap_err();
        assert!(remote.contains("remote (url) server"), "{remote}");
        let args = route(&mut json!({"command": "x", "args": "-y"}), toolgate, policy).unwrap_err();
        assert!(args.contains("not a list of strings"), "{args}");
    }
}
