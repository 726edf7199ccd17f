//! The configuration file (SPEC §2.1): its TOML model, and resolution into [`Settings`].
//!
//! Parsing is strict — unknown keys are errors — because a misspelt security setting that
//! is silently ignored is worse than a gateway that refuses to start. Sections that later
//! features consume (store, audit, admin, oauth, catalogue, approvals) are modelled already
//! so that a configuration written for them is validated today.

use crate::grants::{GrantSpec, PolicyRef};
use crate::time::parse_rfc3339;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toolgate_policy::{duration, Policy};

/// `[gateway]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// Embedded store directory (default `.toolgate`, relative to the config file).
    pub data_dir: Option<PathBuf>,
    /// Public URL, for OAuth metadata and approval links.
    pub public_url: Option<String>,
    /// How long a connection may take to send a whole request head.
    pub header_read_timeout: Option<String>,
    /// Host names accepted besides loopback.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Largest request body accepted, in bytes (default 4 MiB).
    pub max_body_bytes: Option<usize>,
    /// A session unused this long (no request, no open stream) is closed (default 1h).
    pub session_idle_timeout: Option<String>,
    /// Largest request head accepted, in bytes (default 64 KiB).
    pub max_header_bytes: Option<usize>,
    /// Calls one grant (with OAuth: one caller) may have running at once (default 64).
    pub max_concurrent_calls: Option<usize>,
    /// Client connections open at once (default 1024); more are answered 503 and closed.
    pub max_connections: Option<usize>,
    /// TLS certificate chain (PEM) for serving HTTPS; not implemented yet, refused if set.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
}

/// `[store]`: cluster-mode backends (used by later features).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Redis for counters.
    pub redis_url: Option<String>,
    /// PostgreSQL for grants, audit, approvals.
    pub postgres_url: Option<String>,
}

/// `[servers.<name>]`: one upstream, either `url` (HTTP) or `command` (stdio).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Streamable HTTP endpoint of an HTTP upstream.
    pub url: Option<String>,
    /// Headers injected into every upstream request; `${VAR}` is expanded.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout (default 60s).
    pub timeout: Option<String>,
    /// Connect timeout for HTTP upstreams (default 10s).
    pub connect_timeout: Option<String>,
    /// Largest message accepted from the upstream where the gateway must hold one whole:
    /// a JSON answer it reads, one SSE event, one stdio line (default 16 MiB).
    pub max_message_bytes: Option<usize>,
    /// Decisions computed and logged but not enforced.
    #[serde(default)]
    pub shadow: bool,
    /// Calls proceed when the counter store is unreachable (used with limits).
    #[serde(default)]
    pub fail_open: bool,
    /// Extra CA certificate (PEM) for a private CA.
    pub ca_file: Option<PathBuf>,
    /// Program of a stdio upstream; `${VAR}` is expanded.
    pub command: Option<String>,
    /// Its arguments; `${VAR}` is expanded.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment for the child; `${VAR}` is expanded.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `[[grants]]`: a declarative grant.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSection {
    /// Label, unique.
    pub name: String,
    /// Hex SHA-256 of the bearer token.
    pub token_sha256: Option<String>,
    /// The token in clear (development only; warned about).
    pub token: Option<String>,
    /// Policy file per server name.
    #[serde(default)]
    pub policies: BTreeMap<String, PathBuf>,
    /// More servers the grant may use (without a policy they answer "(no policy)").
    #[serde(default)]
    pub servers: Vec<String>,
    /// RFC 3339 expiry.
    pub expires: Option<String>,
    /// Free text.
    pub note: Option<String>,
}

/// `[audit]` (used by the audit log feature).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// `keys` or `full`.
    pub capture: Option<String>,
    /// Paths masked with `capture = "full"`.
    #[serde(default)]
    pub redact: Vec<String>,
    /// Days to keep records.
    pub retain_days: Option<u32>,
    /// `process` or `fsync`.
    pub durability: Option<String>,
}

/// `[[admin.members]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminMember {
    /// Who.
    pub name: String,
    /// `viewer`, `policy_manager` or `admin`.
    pub role: String,
    /// Hex SHA-256 of the member's token.
    pub token_sha256: String,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Hex SHA-256 of the admin token.
    pub token_sha256: Option<String>,
    /// More members with roles.
    #[serde(default)]
    pub members: Vec<AdminMember>,
}

/// `[[oauth.claim_rules]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// Claim name.
    pub claim: String,
    /// Value to match.
    pub value: String,
    /// Grant whose policies apply.
    pub grant: String,
}

/// `[oauth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OauthSection {
    /// Expected issuer.
    pub issuer: Option<String>,
    /// JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL.
    pub jwks_url: Option<String>,
    /// Scopes every token needs.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Claim-to-grant rules, first match wins.
    #[serde(default)]
    pub claim_rules: Vec<ClaimRule>,
}

/// `[catalogue]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueSection {
    /// Hide and refuse tools flagged by the poisoning checks.
    #[serde(default)]
    pub withhold_flagged: bool,
    /// What happens to a tool seen for the first time: `"pin"` (default: approved at first
    /// sight) or `"withhold"` (hidden and refused until an operator approves it).
    pub new_tools: Option<String>,
}

/// `[approvals]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSection {
    /// Webhook announcing new approval requests.
    pub webhook_url: Option<String>,
    /// HMAC secret for the webhook.
    pub webhook_secret: Option<String>,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[gateway]`.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// `[store]`.
    pub store: Option<StoreSection>,
    /// `[servers.*]`.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerSection>,
    /// `[[grants]]`.
    #[serde(default)]
    pub grants: Vec<GrantSection>,
    /// `[audit]`.
    pub audit: Option<AuditSection>,
    /// `[admin]`.
    pub admin: Option<AdminSection>,
    /// `[oauth]`.
    pub oauth: Option<OauthSection>,
    /// `[catalogue]`.
    pub catalogue: Option<CatalogueSection>,
    /// `[approvals]`.
    pub approvals: Option<ApprovalsSection>,
    /// `[telemetry]`.
    pub telemetry: Option<TelemetrySection>,
}

/// `[telemetry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// OTLP/HTTP collector base URL (`http://127.0.0.1:4318`): spans go to `<it>/v1/traces`.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute (default `toolgate`).
    pub service_name: Option<String>,
}

/// Where traces go (`[telemetry]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub traces_url: String,
    /// `service.name`.
    pub service_name: String,
}

/// How to reach one upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamSpec {
    /// Streamable HTTP.
    Http {
        /// Endpoint URL.
        url: String,
        /// Injected headers (already expanded).
        headers: Vec<(String, String)>,
        /// Extra CA file.
        ca_file: Option<PathBuf>,
        /// Connect timeout.
        connect_timeout: Duration,
    },
    /// A child process speaking newline-delimited JSON-RPC.
    Stdio {
        /// Program.
        command: String,
        /// Arguments.
        args: Vec<String>,
        /// Extra environment.
        env: Vec<(String, String)>,
    },
}

/// One resolved upstream server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    /// Short name, the `<server>` of `/mcp/<server>`.
    pub name: String,
    /// How to reach it.
    pub upstream: UpstreamSpec,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Decisions logged, not enforced.
    pub shadow: bool,
    /// Proceed when the counter store is down.
    pub fail_open: bool,
    /// Largest upstream message held whole (JSON answer, SSE event, stdio line).
    pub max_message_bytes: usize,
}

/// How requests are audited (`[audit]`).
#[derive(Debug, Clone, Default)]
pub struct AuditSettings {
    /// `capture = "full"`: argument values are stored (with `redact` paths masked);
    /// otherwise only their sorted keys and digest.
    pub capture_full: bool,
    /// Argument paths whose values are masked when they are stored.
    pub redact: Vec<toolgate_policy::ArgPath>,
    /// Records older than this many days are pruned (the chain stays verifiable).
    pub retain_days: Option<u32>,
    /// `durability = "fsync"`: every commit is flushed to disk (survives power loss), not
    /// just handed to the operating system (survives a killed gateway).
    pub fsync: bool,
}

/// `gateway.data_dir` when the configuration does not set it (relative to the configuration
/// file; to the working directory in quick mode).
pub const DEFAULT_DATA_DIR: &str = ".toolgate";

/// `[gateway] max_concurrent_calls` unless configured: generous for one agent, small next
/// to the connections and workers a runaway loop could otherwise take.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 64;

/// `[servers.X] max_message_bytes` unless configured.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The bounds of `[servers.X] max_message_bytes`: an initialize answer must fit, and one
/// message must not be able to take the machine's memory.
const MESSAGE_BYTES_BOUNDS: (usize, usize) = (4 << 10, 1 << 30);

/// `[gateway] max_connections` unless configured: well under a default file-descriptor
/// limit, well over what agents on one machine open.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The largest `max_concurrent_calls` and `max_connections` accepted.
const MOST_AT_ONCE: usize = 1_000_000;

/// Everything the running gateway needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Embedded store directory.
    pub data_dir: PathBuf,
    /// Host names accepted besides loopback.
    pub allowed_hosts: Vec<String>,
    /// Header-read timeout.
    pub header_read_timeout: Duration,
    /// Body size limit.
    pub max_body_bytes: usize,
    /// Header size limit.
    pub max_header_bytes: usize,
    /// Idle sessions are closed after this long.
    pub session_idle_timeout: Duration,
    /// Calls one caller may have running at once.
    pub max_concurrent_calls: usize,
    /// Client connections open at once.
    pub max_connections: usize,
    /// Cluster mode: counters in this Redis instead of the embedded store.
    pub redis_url: Option<String>,
    /// Cluster mode: the audit log in this PostgreSQL instead of the embedded store.
    pub postgres_url: Option<String>,
    /// The audit log.
    pub audit: AuditSettings,
    /// Upstreams by name.
    pub servers: Vec<ServerSpec>,
    /// Declarative grants.
    pub grants: Vec<GrantSpec>,
    /// Who may use the admin API, with which role (`[admin]`); empty: the API is off.
    pub admins: Vec<AdminSpec>,
    /// `gateway.public_url` without a trailing slash: the gateway's own URL, as clients
    /// reach it (OAuth audience and metadata).
    pub public_url: Option<String>,
    /// OAuth resource-server mode (`[oauth]`).
    pub oauth: Option<OauthSettings>,
    /// `catalogue.new_tools = "withhold"`: new tools wait for an operator's approval.
    pub withhold_new_tools: bool,
    /// `[approvals]`: where each new approval request is announced.
    pub approvals_webhook: Option<WebhookSettings>,
    /// `catalogue.withhold_flagged`: tools whose definitions the poisoning or shadowing
    /// checks flag are withheld (hidden and refused) until an operator approves them.
    pub withhold_flagged: bool,
    /// Warnings to log at start-up (e.g. clear-text tokens).
    pub warnings: Vec<String>,
    /// Whether this gateway is the only one on `data_dir` and keeps its counters in memory
    /// (see toolgate-store's owned.rs); `false` for `toolgate stdio`, of which a desktop runs
    /// several at once on one directory: they count together through SQLite.
    pub exclusive_data_dir: bool,
    /// The file these settings were read from (none in quick mode): a live reload reads it
    /// again.
    pub config_path: Option<PathBuf>,
    /// OpenTelemetry traces, one span per `tools/call` (`[telemetry]`).
    pub telemetry: Option<TelemetrySettings>,
    /// What the command line put in place of the file's settings: a live reload puts it
    /// there again.
    pub overrides: Overrides,
}

/// Settings given on the command line, which win over the configuration file's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `toolgate stdio --server NAME`: only this server is run.
    pub only_server: Option<String>,
    /// `toolgate stdio`: the grant its client acts as, and the SHA-256 of the private token
    /// the in-process gateway accepts for it (in place of the grant's own).
    pub local_token: Option<(String, [u8; 32])>,
    /// `toolgate stdio`: no admin API or dashboard on the private port (they stay with the
    /// operator's gateway).
    pub without_admin: bool,
}

impl Settings {
    /// Puts the command line's `overrides` in place of the file's settings, and keeps them
    /// for a live reload.
    pub fn override_with(&mut self, overrides: Overrides) {
        if let Some(listen) = overrides.listen {
            self.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(only) = &overrides.only_server {
            self.servers.retain(|s| &s.name == only);
        }
        if let Some((grant, token_sha256)) = &overrides.local_token {
            for spec in self.grants.iter_mut().filter(|g| &g.name == grant) {
                spec.token_sha256 = *token_sha256;
            }
        }
        if overrides.without_admin {
            self.admins.clear();
        }
        self.overrides = overrides;
    }

    /// Defaults for everything but servers and grants (used by quick mode and tests).
    pub fn new(listen: SocketAddr) -> Self {
        Settings {
            listen,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            allowed_hosts: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 4 << 20,
            max_header_bytes: 64 << 10,
            session_idle_timeout: Duration::from_secs(3600),
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            redis_url: None,
            postgres_url: None,
            audit: AuditSettings::default(),
            servers: Vec::new(),
            grants: Vec::new(),
            admins: Vec::new(),
            public_url: None,
            oauth: None,
            withhold_flagged: false,
            withhold_new_tools: false,
            approvals_webhook: None,
            warnings: Vec::new(),
            config_path: None,
            telemetry: None,
            overrides: Overrides::default(),
            exclusive_data_dir: true,
        }
    }
}

/// The approvals webhook (`[approvals]`): one signed JSON POST per new request.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Where to POST (http or https).
    pub url: String,
    /// The HMAC-SHA256 key of the `X-Toolgate-Signature` header.
    pub secret: String,
}

/// What an admin token may do (SPEC §7); each role includes those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminRole {
    /// Reads logs, policies, servers and grant labels.
    Viewer,
    /// Also edits and attaches policies.
    PolicyManager,
    /// Also mints, rotates and revokes grants, and reads the admin audit stream.
    Admin,
}

impl AdminRole {
    /// The name used in the configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Viewer => "viewer",
            AdminRole::PolicyManager => "policy_manager",
            AdminRole::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<AdminRole> {
        [
            AdminRole::Viewer,
            AdminRole::PolicyManager,
            AdminRole::Admin,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// One holder of an admin token.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSpec {
    /// Who (`admin` for `[admin] token_sha256`), for the admin audit stream.
    pub name: String,
    /// What they may do.
    pub role: AdminRole,
    /// SHA-256 of their token.
    pub token_sha256: [u8; 32],
}

/// OAuth resource-server mode, validated (SPEC §7).
#[derive(Debug, Clone, PartialEq)]
pub struct OauthSettings {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// Where the signing keys are.
    pub jwks: JwksSource,
    /// Scopes every token needs (403 `insufficient_scope` otherwise).
    pub required_scopes: Vec<String>,
    /// Claim-to-grant rules, first match wins.
    pub claim_rules: Vec<ClaimRuleSpec>,
}

/// Where an OAuth issuer's signing keys (a JWKS) come from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    /// A file, read at start.
    File(PathBuf),
    /// An HTTPS URL (plain HTTP only on loopback), fetched and cached.
    Url(String),
}

/// One `[[oauth.claim_rules]]`: a token whose `claim` equals `value` (or, for an array,
/// contains it; for `scope`, has it as a word) gets grant `grant`'s policies.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRuleSpec {
    /// The claim's name.
    pub claim: String,
    /// The value to match.
    pub value: String,
    /// The configured grant whose policies apply.
    pub grant: String,
}

/// A configuration problem; every one found is reported, each naming file and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Expands `${VAR}` from the environment; an unset variable is an error naming it.
pub fn expand_env(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated \"${{\" in {text:?}"))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name {name:?} in {text:?}"));
        }
        let value =
            lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Hex SHA-256 of a token, as stored in `token_sha256`.
pub fn token_sha256_hex(token: &str) -> String {
    toolgate_store::audit::hex(&Sha256::digest(token.as_bytes()))
}

/// A policy document's version: the first 16 hex digits of the SHA-256 of its bytes.
pub fn policy_version(document: &[u8]) -> String {
    toolgate_store::audit::hex(&Sha256::digest(document))[..16].to_owned()
}

/// 64 hex digits (a SHA-256) as bytes.
pub(crate) fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Loads a policy file, naming the file in every error.
pub fn load_policy(path: &Path) -> Result<PolicyRef, Vec<String>> {
    let bytes = std::fs::read(path)
        .map_err(|e| vec![format!("{}: cannot read policy: {e}", path.display())])?;
    let policy = Policy::from_json_bytes(&bytes).map_err(|errors| {
        errors
            .0
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect::<Vec<_>>()
    })?;
    Ok(PolicyRef {
        id: path.display().to_string(),
        version: policy_version(&bytes),
        policy: Arc::new(policy),
    })
}

/// Validates `[oauth]`.
fn oauth_settings(
    file: &str,
    oauth: &OauthSection,
    base: &Path,
    settings: &Settings,
    grants: &[GrantSpec],
    errors: &mut Vec<String>,
) -> Option<OauthSettings> {
    let before = errors.len();
    if settings.public_url.is_none() {
        errors.push(format!(
            "{file}: gateway.public_url: required with [oauth]: tokens must name this gateway as their audience"
        ));
    }
    let issuer = oauth.issuer.clone().unwrap_or_else(|| {
        errors.push(format!(
            "{file}: oauth.issuer: required (the `iss` tokens must carry)"
        ));
        String::new()
    });
    let jwks = match (&oauth.jwks_file, &oauth.jwks_url) {
        (Some(path), None) => Some(JwksSource::File(base.join(path))),
        (None, Some(url)) if jwks_url_allowed(url) => Some(JwksSource::Url(url.clone())),
        (None, Some(url)) => {
            errors.push(format!(
                "{file}: oauth.jwks_url: {url:?} must be an https:// URL (http:// only on loopback)"
            ));
            None
        }
        _ => {
            errors.push(format!(
                "{file}: oauth: set exactly one of `jwks_file` and `jwks_url`"
            ));
            None
        }
    };
    let mut claim_rules = Vec::new();
    for (index, rule) in oauth.claim_rules.iter().enumerate() {
        if grants.iter().any(|g| g.name == rule.grant) {
            claim_rules.push(ClaimRuleSpec {
                claim: rule.claim.clone(),
                value: rule.value.clone(),
                grant: rule.grant.clone(),
            });
        } else {
            errors.push(format!(
                "{file}: oauth.claim_rules[{index}].grant: no grant named {:?} is configured",
                rule.grant
            ));
        }
    }
    if claim_rules.is_empty() && errors.len() == before {
        errors.push(format!(
            "{file}: oauth.claim_rules: at least one rule is needed to map a token to a grant"
        ));
    }
    let jwks = jwks?;
    (errors.len() == before).then(|| OauthSettings {
        issuer,
        jwks,
        required_scopes: oauth.required_scopes.clone(),
        claim_rules,
    })
}

/// HTTPS, or plain HTTP to a loopback address (an identity provider on this machine).
fn jwks_url_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    crate::front::host_allowed(authority, &[]) && !authority.is_empty()
}

/// Validates `[admin]`: roles, token hashes, and that no two holders (nor a grant) share a
/// token — a token must say who is calling.
fn admins(
    file: &str,
    admin: Option<&AdminSection>,
    grants: &[GrantSpec],
    errors: &mut Vec<String>,
) -> Vec<AdminSpec> {
    let Some(admin) = admin else {
        return Vec::new();
    };
    let mut found: Vec<AdminSpec> = Vec::new();
    let mut add = |key: String, name: &str, role: AdminRole, hex: &str| {
        let Some(token_sha256) = parse_hex32(hex) else {
            errors.push(format!(
                "{file}: {key}.token_sha256: expected 64 hex digits (the SHA-256 of the token)"
            ));
            return;
        };
        if found.iter().any(|a| a.name == name) {
            errors.push(format!("{file}: {key}.name: {name:?} is named twice"));
        } else if found.iter().any(|a| a.token_sha256 == token_sha256)
            || grants.iter().any(|g| g.token_sha256 == token_sha256)
        {
            errors.push(format!(
                "{file}: {key}.token_sha256: this token is already used by another admin or a grant"
            ));
        } else {
            found.push(AdminSpec {
                name: name.to_owned(),
                role,
                token_sha256,
            });
        }
    };
    if let Some(hex) = &admin.token_sha256 {
        add("admin".to_owned(), "admin", AdminRole::Admin, hex);
    }
    let mut unknown_roles = Vec::new();
    for (index, member) in admin.members.iter().enumerate() {
        let key = format!("admin.members[{index}]");
        match AdminRole::parse(&member.role) {
            Some(role) => add(key, &member.name, role, &member.token_sha256),
            None => unknown_roles.push(format!(
                "{file}: {key}.role: {:?} is not a role; expected \"viewer\", \"policy_manager\" or \"admin\"",
                member.role
            )),
        }
    }
    errors.extend(unknown_roles);
    found
}

/// Validates `[audit]`.
fn audit_settings(
    file: &str,
    audit: &AuditSection,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> AuditSettings {
    let capture_full = match audit.capture.as_deref() {
        None | Some("keys") => false,
        Some("full") => true,
        Some(other) => {
            errors.push(format!(
                "{file}: audit.capture: {other:?} is not a capture mode; expected \"keys\" or \"full\""
            ));
            false
        }
    };
    let fsync = match audit.durability.as_deref() {
        None | Some("process") => false,
        Some("fsync") => true,
        Some(other) => {
            errors.push(format!(
                "{file}: audit.durability: {other:?} is not a durability; expected \"process\" or \"fsync\""
            ));
            false
        }
    };
    let redact = audit
        .redact
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            toolgate_policy::ArgPath::parse(text)
                .map_err(|e| errors.push(format!("{file}: audit.redact[{i}]: {e}")))
                .ok()
        })
        .collect::<Vec<_>>();
    if !redact.is_empty() && !capture_full {
        warnings.push(format!(
            "{file}: audit.redact has no effect unless audit.capture = \"full\" (argument values are not stored)"
        ));
    }
    if audit.retain_days == Some(0) {
        errors.push(format!(
            "{file}: audit.retain_days: 0 would prune every record at once; expected at least 1"
        ));
    }
    AuditSettings {
        capture_full,
        redact,
        retain_days: audit.retain_days.filter(|d| *d > 0),
        fsync,
    }
}

fn parse_duration_key(
    file: &str,
    key: &str,
    value: Option<&str>,
    default: Duration,
    errors: &mut Vec<String>,
) -> Duration {
    match value {
        None => default,
        Some(text) => duration::parse(text).unwrap_or_else(|e| {
            errors.push(format!("{file}: {key}: {e}"));
            default
        }),
    }
}

/// Where the data directory of the configuration at `path` is, read leniently (only
/// `gateway.data_dir`): for recording why the whole configuration was rejected.
pub fn data_dir_hint(path: &Path) -> PathBuf {
    let base = path.parent().unwrap_or(Path::new("."));
    let configured = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| {
            table
                .get("gateway")?
                .get("data_dir")?
                .as_str()
                .map(PathBuf::from)
        });
    base.join(configured.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)))
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{file}: cannot read: {e}")]))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut settings = from_toml(&file, &text, &base, &env_lookup)?;
    settings.config_path = Some(path.to_path_buf());
    Ok(settings)
}

/// Validates configuration text; `base` resolves relative paths.
pub fn from_toml(
    file: &str,
    text: &str,
    base: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigErrors> {
    let deserializer = toml::Deserializer::new(text);
    let raw: ConfigFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().to_owned();
        let location = inner
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        ConfigErrors(vec![format!("{file}: {path}: {message}{location}")])
    })?;
    resolve(file, raw, base, lookup)
}

fn resolve(
    file: &str,
    raw: ConfigFile,
    base: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigErrors> {
    let mut errors = Vec::new();
    let listen_text = raw.gateway.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen = listen_text.parse().unwrap_or_else(|e| {
        errors.push(format!(
            "{file}: gateway.listen: {listen_text:?} is not an address (host:port): {e}"
        ));
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let mut settings = Settings::new(listen);
    settings.data_dir = base.join(
        raw.gateway
            .data_dir
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
    );
    settings.allowed_hosts = raw.gateway.allowed_hosts;
    settings.header_read_timeout = parse_duration_key(
        file,
        "gateway.header_read_timeout",
        raw.gateway.header_read_timeout.as_deref(),
        settings.header_read_timeout,
        &mut errors,
    );
    settings.session_idle_timeout = parse_duration_key(
        file,
        "gateway.session_idle_timeout",
        raw.gateway.session_idle_timeout.as_deref(),
        settings.session_idle_timeout,
        &mut errors,
    );
    for (key, value, setting) in [
        (
            "max_concurrent_calls",
            raw.gateway.max_concurrent_calls,
            &mut settings.max_concurrent_calls,
        ),
        (
            "max_connections",
            raw.gateway.max_connections,
            &mut settings.max_connections,
        ),
    ] {
        match value {
            Some(0) => errors.push(format!(
                "{file}: gateway.{key}: 0 would refuse everything; expected at least 1"
            )),
            Some(n) if n > MOST_AT_ONCE => errors.push(format!(
                "{file}: gateway.{key}: {n} is too large; expected at most {MOST_AT_ONCE}"
            )),
            Some(n) => *setting = n,
            None => {}
        }
    }
    if let Some(n) = raw.gateway.max_body_bytes {
        settings.max_body_bytes = n;
    }
    if let Some(n) = raw.gateway.max_header_bytes {
        if n < 8192 {
            errors.push(format!(
                "{file}: gateway.max_header_bytes: {n} is too small; expected at least 8192"
            ));
        }
        settings.max_header_bytes = n.max(8192);
    }
    if let Some(store) = &raw.store {
        if let Some(url) = &store.redis_url {
            match expand_env(url, lookup) {
                Ok(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                    settings.redis_url = Some(url)
                }
                Ok(url) => errors.push(format!(
                    "{file}: store.redis_url: {url:?} must start with redis:// or rediss://"
                )),
                Err(e) => errors.push(format!("{file}: store.redis_url: {e}")),
            }
        }
        if let Some(url) = &store.postgres_url {
            match expand_env(url, lookup) {
                Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    settings.postgres_url = Some(url)
                }
                Ok(_) => errors.push(format!(
                    "{file}: store.postgres_url: must start with postgres:// or postgresql://"
                )),
                Err(e) => errors.push(format!("{file}: store.postgres_url: {e}")),
            }
        }
    }
    if let Some(catalogue) = &raw.catalogue {
        settings.withhold_flagged = catalogue.withhold_flagged;
        match catalogue.new_tools.as_deref() {
            None | Some("pin") => {}
            Some("withhold") => settings.withhold_new_tools = true,
            Some(other) => errors.push(format!(
                "{file}: catalogue.new_tools: {other:?} is not a choice; expected \"pin\" (approved at first sight) or \"withhold\" (until an operator approves)"
            )),
        }
    }
    if let Some(approvals) = &raw.approvals {
        let expand = |key: &str, value: &Option<String>, errors: &mut Vec<String>| {
            value.as_ref().and_then(|v| {
                expand_env(v, lookup)
                    .map_err(|e| errors.push(format!("{file}: approvals.{key}: {e}")))
                    .ok()
            })
        };
        let url = expand("webhook_url", &approvals.webhook_url, &mut errors);
        let secret = expand("webhook_secret", &approvals.webhook_secret, &mut errors);
        match (url, secret) {
            (Some(url), Some(secret)) => {
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.parse::<http::Uri>().is_err()
                {
                    errors.push(format!(
                        "{file}: approvals.webhook_url: {url:?} is not an http:// or https:// URL"
                    ));
                } else if secret.len() < 16 {
                    errors.push(format!(
                        "{file}: approvals.webhook_secret: at least 16 characters are needed to sign requests safely"
                    ));
                } else {
                    settings.approvals_webhook = Some(WebhookSettings { url, secret });
                }
            }
            (Some(_), None) => errors.push(format!(
                "{file}: approvals.webhook_secret: a webhook needs a secret to sign its requests"
            )),
            (None, Some(_)) => errors.push(format!(
                "{file}: approvals.webhook_secret: there is no approvals.webhook_url to sign for"
            )),
            (None, None) => {}
        }
    }
    if let Some(telemetry) = &raw.telemetry {
        match &telemetry.otlp_endpoint {
            Some(url)
                if (url.starts_with("http://") || url.starts_with("https://"))
                    && url.parse::<http::Uri>().is_ok() =>
            {
                settings.telemetry = Some(TelemetrySettings {
                    traces_url: format!("{}/v1/traces", url.trim_end_matches('/')),
                    service_name: telemetry
                        .service_name
                        .clone()
                        .unwrap_or_else(|| "toolgate".to_owned()),
                });
            }
            Some(url) => errors.push(format!(
                "{file}: telemetry.otlp_endpoint: {url:?} is not an http:// or https:// URL (an OTLP/HTTP collector, e.g. http://127.0.0.1:4318)"
            )),
            None => errors.push(format!(
                "{file}: telemetry.otlp_endpoint: required in [telemetry] (an OTLP/HTTP collector, e.g. http://127.0.0.1:4318)"
            )),
        }
    }
    if let Some(audit) = &raw.audit {
        settings.audit = audit_settings(file, audit, &mut errors, &mut settings.warnings);
    }
    if raw.gateway.tls_cert.is_some() || raw.gateway.tls_key.is_some() {
        errors.push(format!(
            "{file}: gateway.tls_cert: serving TLS is not supported yet; terminate TLS in front of toolgate"
        ));
    }

    for (name, server) in raw.servers {
        let key = format!("servers.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            errors.push(format!(
                "{file}: {key}: server names may use letters, digits, '-', '_' and '.' only"
            ));
        }
        let timeout = parse_duration_key(
            file,
            &format!("{key}.timeout"),
            server.timeout.as_deref(),
            Duration::from_secs(60),
            &mut errors,
        );
        let connect_timeout = parse_duration_key(
            file,
            &format!("{key}.connect_timeout"),
            server.connect_timeout.as_deref(),
            Duration::from_secs(10),
            &mut errors,
        );
        let mut expand = |what: &str, value: &str| {
            expand_env(value, lookup).unwrap_or_else(|e| {
                errors.push(format!("{file}: {key}.{what}: {e}"));
                String::new()
            })
        };
        let upstream = match (&server.url, &server.command) {
            (Some(url), None) => {
                let headers = server
                    .headers
                    .iter()
                    .map(|(h, v)| (h.clone(), expand(&format!("headers.{h}"), v)))
                    .collect();
                let url = expand("url", url);
                UpstreamSpec::Http {
                    url,
                    headers,
                    ca_file: server.ca_file.as_ref().map(|p| base.join(p)),
                    connect_timeout,
                }
            }
            (None, Some(command)) => {
                let command = expand("command", command);
                let args = server.args.iter().map(|a| expand("args", a)).collect();
                let env = server
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), expand(&format!("env.{k}"), v)))
                    .collect();
                UpstreamSpec::Stdio { command, args, env }
            }
            _ => {
                errors.push(format!(
                    "{file}: {key}: set exactly one of `url` (HTTP upstream) and `command` (stdio upstream)"
                ));
                continue;
            }
        };
        if let UpstreamSpec::Http { url, .. } = &upstream {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(format!(
                    "{file}: {key}.url: {url:?} must start with http:// or https://"
                ));
            }
        }
        let max_message_bytes = match server.max_message_bytes {
            None => DEFAULT_MAX_MESSAGE_BYTES,
            Some(n) if (MESSAGE_BYTES_BOUNDS.0..=MESSAGE_BYTES_BOUNDS.1).contains(&n) => n,
            Some(n) => {
                errors.push(format!(
                    "{file}: {key}.max_message_bytes: {n} is out of bounds; expected {} to {}",
                    MESSAGE_BYTES_BOUNDS.0, MESSAGE_BYTES_BOUNDS.1
                ));
                DEFAULT_MAX_MESSAGE_BYTES
            }
        };
        settings.servers.push(ServerSpec {
            name,
            upstream,
            timeout,
            shadow: server.shadow,
            fail_open: server.fail_open,
            max_message_bytes,
        });
    }

    let server_names: BTreeSet<&str> = settings.servers.iter().map(|s| s.name.as_str()).collect();
    let mut grant_names = BTreeSet::new();
    let mut grants = Vec::new();
    for (index, grant) in raw.grants.into_iter().enumerate() {
        let key = format!("grants[{index}]");
        if !grant_names.insert(grant.name.clone()) {
            errors.push(format!(
                "{file}: {key}.name: grant {:?} is defined twice",
                grant.name
            ));
        }
        let token_sha256 = match (&grant.token_sha256, &grant.token) {
            (Some(hex), None) => parse_hex32(hex).or_else(|| {
                errors.push(format!(
                    "{file}: {key}.token_sha256: expected 64 hex digits (the SHA-256 of the token)"
                ));
                None
            }),
            (None, Some(token)) => {
                settings.warnings.push(format!(
                    "{file}: {key}.token: grant {:?} has its token in clear text; use token_sha256 = \"{}\" outside development",
                    grant.name,
                    token_sha256_hex(token)
                ));
                parse_hex32(&token_sha256_hex(token))
            }
            _ => {
                errors.push(format!(
                    "{file}: {key}: set exactly one of `token_sha256` and `token`"
                ));
                None
            }
        };
        let mut policies = BTreeMap::new();
        for (server, policy_path) in &grant.policies {
            if !server_names.contains(server.as_str()) {
                errors.push(format!(
                    "{file}: {key}.policies.{server}: no server named {server:?} is configured"
                ));
                continue;
            }
            match load_policy(&base.join(policy_path)) {
                Ok(policy) => {
                    policies.insert(server.clone(), policy);
                }
                Err(es) => errors.extend(es),
            }
        }
        let mut servers: BTreeSet<String> = grant.policies.keys().cloned().collect();
        for server in &grant.servers {
            if !server_names.contains(server.as_str()) {
                errors.push(format!(
                    "{file}: {key}.servers: no server named {server:?} is configured"
                ));
            }
            servers.insert(server.clone());
        }
        let expires = grant.expires.as_deref().and_then(|text| {
            parse_rfc3339(text).or_else(|| {
                errors.push(format!(
                    "{file}: {key}.expires: {text:?} is not an RFC 3339 time such as 2027-01-01T00:00:00Z"
                ));
                None
            })
        });
        if let Some(token_sha256) = token_sha256 {
            grants.push(GrantSpec {
                name: grant.name,
                token_sha256,
                policies,
                servers,
                expires_unix: expires,
                note: grant.note,
                ..GrantSpec::default()
            });
        }
    }
    settings.admins = admins(file, raw.admin.as_ref(), &grants, &mut errors);
    settings.public_url = raw.gateway.public_url.as_deref().and_then(|url| {
        let url = url.trim_end_matches('/');
        if url.starts_with("https://") || url.starts_with("http://") {
            Some(url.to_owned())
        } else {
            errors.push(format!(
                "{file}: gateway.public_url: {url:?} must start with https:// (or http://)"
            ));
            None
        }
    });
    if let Some(oauth) = &raw.oauth {
        settings.oauth = oauth_settings(file, oauth, base, &settings, &grants, &mut errors);
    }
    settings.grants = grants;
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_overrides_apply_again_to_settings_read_anew() {
        // What a live reload does: the file's settings, then the command line's again.
        let from_file = || {
            let mut s = Settings::new("127.0.0.1:8080".parse().unwrap());
            for name in ["a", "b"] {
                s.servers.push(ServerSpec {
                    name: name.into(),
                    upstream: UpstreamSpec::Stdio {
                        command: "x".into(),
                        args: vec![],
                        env: vec![],
                    },
                    timeout: Duration::from_secs(1),
                    shadow: false,
                    fail_open: false,
                    max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
                });
            }
            s.admins.push(AdminSpec {
                name: "admin".into(),
                role: AdminRole::Admin,
                token_sha256: [1; 32],
            });
            s
        };
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(PathBuf::from("/d")),
            only_server: Some("b".into()),
            local_token: None,
            without_admin: true,
        };
        let mut started = from_file();
        started.override_with(overrides.clone());
        let mut reloaded = from_file();
        reloaded.override_with(started.overrides.clone());
        for s in [&started, &reloaded] {
            assert_eq!(s.listen.port(), 0);
            assert_eq!(s.data_dir, PathBuf::from("/d"));
            assert_eq!(
                s.servers
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>(),
                ["b"]
            );
            assert!(s.admins.is_empty());
            assert_eq!(s.overrides, overrides);
        }
    }

    fn lookup(name: &str) -> Option<String> {
        (name == "KEY").then(|| "s3cret".to_owned())
    }

    fn load_text(text: &str) -> Result<Settings, ConfigErrors> {
        // A directory per call: tests run in parallel, and one rewriting the policy while
        // another reads it would hand that one an empty file.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tg-config-test-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.json"), r#"{"version":"1","default":"allow"}"#).unwrap();
        let loaded = from_toml("toolgate.toml", text, &dir, &lookup);
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    #[test]
    fn oauth_and_admin_sections_are_validated_naming_each_key() {
        let grant = "[servers.a]\nurl = \"http://127.0.0.1:9/mcp\"\n[[grants]]\nname = \"g\"\ntoken = \"t\"\npolicies = { a = \"p.json\" }\n";
        let errors = load_text(&format!(
            "{grant}[oauth]\njwks_url = \"http://idp.example/jwks\"\n[[oauth.claim_rules]]\nclaim = \"sub\"\nvalue = \"x\"\ngrant = \"nobody\"\n\
             [admin]\ntoken_sha256 = \"{}\"\n[[admin.members]]\nname = \"v\"\nrole = \"boss\"\ntoken_sha256 = \"{}\"\n",
            token_sha256_hex("t"),
            token_sha256_hex("v")
        ))
        .unwrap_err()
        .0
        .join("\n");
        for needle in [
            "gateway.public_url: required with [oauth]",
            "oauth.issuer: required",
            "oauth.jwks_url: \"http://idp.example/jwks\" must be an https:// URL",
            "oauth.claim_rules[0].grant: no grant named \"nobody\"",
            "admin.token_sha256: this token is already used by another admin or a grant",
            "admin.members[0].role: \"boss\" is not a role",
        ] {
            assert!(
                errors.contains(needle),
                "{needle:?} missing from:\n{errors}"
            );
        }
        let ok = load_text(&format!(
            "[gateway]\npublic_url = \"https://gw.example/\"\n{grant}[oauth]\nissuer = \"https://idp.example\"\n\
             jwks_url = \"http://127.0.0.1:9/jwks\"\n[[oauth.claim_rules]]\nclaim = \"sub\"\nvalue = \"x\"\ngrant = \"g\"\n"
        ))
        .unwrap();
        assert_eq!(ok.public_url.as_deref(), Some("https://gw.example"));
        let oauth = ok.oauth.unwrap();
        assert_eq!(
            oauth.jwks,
            JwksSource::Url("http://127.0.0.1:9/jwks".into())
        );
        assert_eq!(oauth.claim_rules[0].grant, "g");
    }

    #[test]
    fn expands_environment_variables() {
        assert_eq!(expand_env("a-${KEY}-b", &lookup).unwrap(), "a-s3cret-b");
        assert!(expand_env("${NOPE}", &lookup)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand_env("${KEY", &lookup).is_err());
    }

    #[test]
    fn a_full_config_resolves() {
        let s = load_text(
            r#"
[gateway]
listen = "127.0.0.1:9999"
header_read_timeout = "5s"
[servers.sendit]
url = "http://127.0.0.1:9000/mcp"
headers = { "X-Api-Key" = "${KEY}" }
timeout = "30s"
[servers.files]
command = "npx"
args = ["-y", "server"]
[[grants]]
name = "ci"
token = "tg_dev"
policies = { sendit = "p.json" }
servers = ["files"]
expires = "2027-01-01T00:00:00Z"
"#,
        )
        .unwrap();
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.header_read_timeout, Duration::from_secs(5));
        assert_eq!(s.servers.len(), 2);
        let sendit = s.servers.iter().find(|x| x.name == "sendit").unwrap();
        assert_eq!(sendit.timeout, Duration::from_secs(30));
        match &sendit.upstream {
            UpstreamSpec::Http { headers, .. } => {
                assert_eq!(
                    headers,
                    &vec![("X-Api-Key".to_owned(), "s3cret".to_owned())]
                )
            }
            other => panic!("{other:?}"),
        }
        let grant = &s.grants[0];
        assert_eq!(grant.servers.len(), 2);
        assert!(grant.policies.contains_key("sendit"));
        assert_eq!(grant.expires_unix, Some(1_798_761_600));
        assert_eq!(s.warnings.len(), 1, "clear-text token warns");
    }

    #[test]
    fn limits_at_once_default_and_refuse_zero_and_absurd_values() {
        let base = "[servers.a]\nurl = \"http://127.0.0.1:9/mcp\"\n";
        let defaults = load_text(base).unwrap();
        assert_eq!(defaults.max_concurrent_calls, DEFAULT_MAX_CONCURRENT_CALLS);
        assert_eq!(defaults.max_connections, DEFAULT_MAX_CONNECTIONS);
        let set = load_text(&format!(
            "[gateway]\nmax_concurrent_calls = 8\nmax_connections = 9\n{base}"
        ))
        .unwrap();
        assert_eq!((set.max_concurrent_calls, set.max_connections), (8, 9));
        for key in ["max_concurrent_calls", "max_connections"] {
            for (value, says) in [
                ("0", "expected at least 1"),
                ("10000000", "expected at most"),
            ] {
                let e = load_text(&format!("[gateway]\n{key} = {value}\n{base}")).unwrap_err();
                assert!(
                    e.0.iter()
                        .any(|m| m.contains(&format!("gateway.{key}")) && m.contains(says)),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn max_message_bytes_defaults_and_has_bounds() {
        let server = |extra: &str| {
            load_text(&format!(
                "[servers.a]\nurl = \"http://127.0.0.1:9/mcp\"\n{extra}"
            ))
        };
        assert_eq!(
            server("").unwrap().servers[0].max_message_bytes,
            DEFAULT_MAX_MESSAGE_BYTES
        );
        assert_eq!(
            server("max_message_bytes = 65536\n").unwrap().servers[0].max_message_bytes,
            65536
        );
        for value in ["100", "4294967296"] {
            let e = server(&format!("max_message_bytes = {value}\n")).unwrap_err();
            assert!(
                e.0.iter()
                    .any(|m| m.contains("servers.a.max_message_bytes")
                        && m.contains("out of bounds")),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let e = load_text("[servers.a]\nurl = \"http://x/mcp\"\ntimeot = \"1s\"\n").unwrap_err();
        assert!(e.0[0].contains("servers.a"), "{e}");
        assert!(e.0[0].contains("timeot"), "{e}");
        assert!(e.0[0].starts_with("toolgate.toml: "), "{e}");
    }

    #[test]
    fn every_problem_is_reported() {
        let e = load_text(
            r#"
[gateway]
listen = "nowhere"
[servers.a]
url = "ftp://x"
[servers.b]
[[grants]]
name = "g"
token_sha256 = "abc"
policies = { zzz = "p.json" }
"#,
        )
        .unwrap_err();
        let text = e.to_string();
        for needle in [
            "gateway.listen",
            "servers.a.url",
            "servers.b: set exactly one",
            "grants[0].token_sha256",
            "grants[0].policies.zzz",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }

    #[test]
    fn a_broken_policy_stops_the_load_with_its_pointer() {
        let dir = std::env::temp_dir().join(format!("tg-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bad.json"), r#"{"version":"2","default":"allow"}"#).unwrap();
        let e = from_toml(
            "c.toml",
            "[servers.a]\nurl = \"http://x/mcp\"\n[[grants]]\nname = \"g\"\ntoken = \"t\"\npolicies = { a = \"bad.json\" }\n",
            &dir,
            &lookup,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad.json: /version"), "{e}");
    }
}
