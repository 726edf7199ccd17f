//! OAuth resource-server mode (SPEC §7, the MCP authorization spec): JWT bearer tokens
//! from an organisation's identity provider, mapped to grants by their claims.
//!
//! A token is accepted only if all of this holds:
//! - it is a compact JWS signed with RS256, ES256 or EdDSA (Ed25519) by a key of the
//!   issuer's JWKS whose type fits the algorithm (no `none`, no HMAC: a public key must
//!   never double as a shared secret), chosen by `kid` when the token names one;
//! - `iss` is the configured issuer; `aud` (a string or an array) names this gateway:
//!   `public_url` or `<public_url>/mcp/<server>`;
//! - `exp` is present and not past, `nbf` (if present) reached — both with 60 s of leeway;
//! - it has every required scope (`scope`, space-separated, or `scp`), else 403
//!   `insufficient_scope`;
//! - a claim rule maps it to a configured grant, else 403.
//!
//! Keys come from a file (read at start) or an HTTPS URL: fetched on first use, again
//! every ten minutes, and at once (at most every 2 s, so that tokens naming made-up `kid`s
//! cannot make the gateway hammer the issuer) when a token names a `kid` the cached set
//! does not have — which is how an issuer's key rotation reaches the gateway.

use crate::config::{ClaimRuleSpec, JwksSource, OauthSettings};
use crate::http_upstream::HttpClient;
use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: i64 = 60;
/// A fetched JWKS is fetched again after this long.
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// An unknown `kid` fetches the JWKS again, but not more often than this.
const JWKS_REFRESH_GAP: Duration = Duration::from_secs(2);
/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why a token was refused: `Unauthorized` answers 401, the others 403.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenRefusal {
    /// Not a valid token for this gateway (the message says which check failed).
    Unauthorized(String),
    /// Valid, but without these required scopes.
    InsufficientScope(Vec<String>),
    /// Valid, but no claim rule maps it to a grant.
    NoGrant,
}

/// A validated token: who it names and which grant applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The grant a claim rule chose.
    pub grant: String,
    /// `sub`, if the token has one.
    pub subject: Option<String>,
    /// All of its claims (for `identity.claims.*` predicates).
    pub claims: Map<String, Value>,
}

/// Validates tokens for one gateway.
pub struct Validator {
    settings: OauthSettings,
    /// Audiences accepted: the public URL itself (`audiences[0]`) and per-server URLs are
    /// derived from it.
    public_url: String,
    keys: KeySource,
}

/// Where the verifying keys are.
enum KeySource {
    /// Read from a file at start.
    File(Arc<Jwks>),
    /// Fetched from a URL and cached.
    Url(Box<FetchedKeys>),
}

/// A JWKS fetched from a URL, with its cache.
struct FetchedKeys {
    url: String,
    client: HttpClient,
    /// The cached set and when it was fetched (`None`: never fetched successfully).
    cached: tokio::sync::Mutex<Option<(Arc<Jwks>, Instant)>>,
    /// When the last fetch was tried (successful or not), for the refresh gap.
    tried: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// A validator for `settings`; a JWKS file must be readable and valid now.
    pub fn new(settings: OauthSettings, public_url: String) -> Result<Self, String> {
        let keys = match &settings.jwks {
            JwksSource::File(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("oauth.jwks_file {}: {e}", path.display()))?;
                KeySource::File(Arc::new(
                    Jwks::parse(&bytes)
                        .map_err(|e| format!("oauth.jwks_file {}: {e}", path.display()))?,
                ))
            }
            JwksSource::Url(url) => KeySource::Url(Box::new(FetchedKeys {
                url: url.clone(),
                client: crate::http_upstream::build_client(None, Duration::from_secs(5))?,
                cached: tokio::sync::Mutex::new(None),
                tried: Mutex::new(None),
            })),
        };
        Ok(Validator {
            settings,
            public_url,
            keys,
        })
    }

    /// The URL of this gateway's Protected Resource Metadata for `server` (for
    /// `WWW-Authenticate: Bearer resource_metadata="…"`).
    pub fn metadata_url(&self, server: Option<&str>) -> String {
        match server {
            Some(server) => format!(
                "{}/.well-known/oauth-protected-resource/mcp/{server}",
                self.public_url
            ),
            None => format!("{}/.well-known/oauth-protected-resource", self.public_url),
        }
    }

    /// Protected Resource Metadata (RFC 9728) for the gateway, or one server's endpoint.
    pub fn metadata(&self, server: Option<&str>) -> Value {
        let resource = match server {
            Some(server) => format!("{}/mcp/{server}", self.public_url),
            None => self.public_url.clone(),
        };
        serde_json::json!({
            "resource": resource,
            "authorization_servers": [self.settings.issuer],
            "scopes_supported": self.settings.required_scopes,
            "bearer_methods_supported": ["header"],
        })
    }

    /// The scopes every token needs.
    pub fn required_scopes(&self) -> &[String] {
        &self.settings.required_scopes
    }

    /// Validates `token` presented at `server`'s endpoint, at Unix time `now`.
    pub async fn validate(
        &self,
        token: &str,
        server: &str,
        now: i64,
    ) -> Result<Validated, TokenRefusal> {
        let unauthorized = |why: &str| TokenRefusal::Unauthorized(why.to_owned());
        let jws = Jws::parse(token).map_err(|e| unauthorized(&e))?;
        let keys = self
            .keys_for(jws.kid.as_deref())
            .await
            .map_err(|e| unauthorized(&e))?;
        jws.verify(&keys).map_err(|e| unauthorized(&e))?;
        let claims = jws.claims;
        if claims.get("iss").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
            return Err(unauthorized(
                "the token's issuer (iss) is not the configured one",
            ));
        }
        let audiences = [
            self.public_url.clone(),
            format!("{}/mcp/{server}", self.public_url),
        ];
        let names_us = match claims.get("aud") {
            Some(Value::String(aud)) => audiences.contains(aud),
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|aud| audiences.iter().any(|a| a == aud)),
            _ => false,
        };
        if !names_us {
            return Err(unauthorized(
                "the token's audience (aud) is not this gateway (its public_url or this server's URL)",
            ));
        }
        match claims.get("exp").and_then(Value::as_f64) {
            Some(exp) if (exp as i64) + LEEWAY_SECONDS > now => {}
            Some(_) => return Err(unauthorized("the token has expired (exp)")),
            None => return Err(unauthorized("the token has no expiry (exp)")),
        }
        if let Some(nbf) = claims.get("nbf") {
            match nbf.as_f64() {
                Some(nbf) if (nbf as i64) - LEEWAY_SECONDS <= now => {}
                _ => return Err(unauthorized("the token is not valid yet (nbf)")),
            }
        }
        let scopes = scopes_of(&claims);
        let missing: Vec<String> = self
            .settings
            .required_scopes
            .iter()
            .filter(|s| !scopes.contains(s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(TokenRefusal::InsufficientScope(missing));
        }
        let grant =
            grant_for(&self.settings.claim_rules, &claims, &scopes).ok_or(TokenRefusal::NoGrant)?;
        Ok(Validated {
            grant: grant.to_owned(),
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            claims,
        })
    }

    /// The key set to check a token naming `kid` against: fetched again if stale, or if it
    /// does not have `kid` and the last fetch is not too recent.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<Jwks>, String> {
        match &self.keys {
            KeySource::File(jwks) => Ok(Arc::clone(jwks)),
            KeySource::Url(fetched) => {
                let FetchedKeys {
                    url,
                    client,
                    cached,
                    tried,
                } = &**fetched;
                let mut cached = cached.lock().await;
                let fresh = cached.as_ref().is_some_and(|(jwks, at)| {
                    at.elapsed() < JWKS_MAX_AGE && kid.is_none_or(|kid| jwks.has(kid))
                });
                let may_try = tried
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none_or(|at| at.elapsed() >= JWKS_REFRESH_GAP || cached.is_none());
                if !fresh && may_try {
                    *tried.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    match fetch(client, url).await {
                        Ok(jwks) => *cached = Some((Arc::new(jwks), Instant::now())),
                        Err(e) => {
                            tracing::error!(target: "toolgate::oauth", "cannot fetch the JWKS at {url}: {e}")
                        }
                    }
                }
                cached
                    .as_ref()
                    .map(|(jwks, _)| Arc::clone(jwks))
                    .ok_or_else(|| "the issuer's signing keys could not be fetched".to_owned())
            }
        }
    }
}

async fn fetch(client: &HttpClient, url: &str) -> Result<Jwks, String> {
    let request = hyper::Request::get(url)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Jwks::parse(&body)
}

/// The token's scopes: `scope` (space-separated) and `scp` (a string or an array).
fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for key in ["scope", "scp"] {
        match claims.get(key) {
            Some(Value::String(text)) => scopes.extend(text.split_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    scopes
}

/// The first rule's grant whose claim matches: equal to a string claim, contained in an
/// array claim, or (for `scope`/`scp`) one of the token's scopes.
fn grant_for<'r>(
    rules: &'r [ClaimRuleSpec],
    claims: &Map<String, Value>,
    scopes: &[String],
) -> Option<&'r str> {
    rules
        .iter()
        .find(|rule| {
            if rule.claim == "scope" || rule.claim == "scp" {
                return scopes.contains(&rule.value);
            }
            match claims.get(&rule.claim) {
                Some(Value::String(text)) => *text == rule.value,
                Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(&rule.value)),
                Some(Value::Bool(b)) => b.to_string() == rule.value,
                Some(Value::Number(n)) => n.to_string() == rule.value,
                _ => false,
            }
        })
        .map(|rule| rule.grant.as_str())
}

/// A JSON Web Key Set, keeping the keys this gateway can verify with.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    key: PublicKey,
}

#[derive(Debug, Clone)]
enum PublicKey {
    /// RSA modulus and exponent (big-endian): RS256.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed P-256 point (`04 || x || y`): ES256.
    P256(Vec<u8>),
    /// An Ed25519 public key: EdDSA.
    Ed25519(Vec<u8>),
}

impl Jwks {
    /// Parses a JWKS document. Keys of other types (or for encryption) are skipped; a
    /// document without one usable key is an error.
    pub fn parse(bytes: &[u8]) -> Result<Jwks, String> {
        let document: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS (JSON): {e}"))?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("not a JWKS: no \"keys\" array")?;
        let mut usable = Vec::new();
        for key in keys {
            if key
                .get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let field = |name: &str| -> Result<Vec<u8>, String> {
                let text = key
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("a key has no \"{name}\""))?;
                base64url(text).ok_or_else(|| format!("a key's \"{name}\" is not base64url"))
            };
            let parsed = match (
                key.get("kty").and_then(Value::as_str),
                key.get("crv").and_then(Value::as_str),
            ) {
                (Some("RSA"), _) => PublicKey::Rsa {
                    n: field("n")?,
                    e: field("e")?,
                },
                (Some("EC"), Some("P-256")) => {
                    let (x, y) = (field("x")?, field("y")?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err("a P-256 key's x and y must be 32 bytes each".into());
                    }
                    PublicKey::P256([&[4u8][..], &x, &y].concat())
                }
                (Some("OKP"), Some("Ed25519")) => PublicKey::Ed25519(field("x")?),
                _ => continue,
            };
            usable.push(Jwk {
                kid: key.get("kid").and_then(Value::as_str).map(str::to_owned),
                key: parsed,
            });
        }
        if usable.is_empty() {
            return Err("the JWKS has no RSA, P-256 or Ed25519 signing key".into());
        }
        Ok(Jwks { keys: usable })
    }

    fn has(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// A compact JWS, split and decoded, not yet verified.
struct Jws {
    alg: String,
    kid: Option<String>,
    /// `header.payload`, what the signature covers.
    signed: String,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

impl Jws {
    fn parse(token: &str) -> Result<Jws, String> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT (three base64url parts)".into());
        };
        let decode_json = |part: &str, what: &str| -> Result<Map<String, Value>, String> {
            let bytes =
                base64url(part).ok_or_else(|| format!("the JWT {what} is not base64url"))?;
            serde_json::from_slice(&bytes)
                .map_err(|_| format!("the JWT {what} is not a JSON object"))
        };
        let header_fields = decode_json(header, "header")?;
        let claims = decode_json(payload, "payload")?;
        let alg = header_fields
            .get("alg")
            .and_then(Value::as_str)
            .ok_or("the JWT header has no alg")?
            .to_owned();
        if !["RS256", "ES256", "EdDSA"].contains(&alg.as_str()) {
            return Err(format!(
                "the JWT algorithm {alg:?} is not accepted (RS256, ES256, EdDSA)"
            ));
        }
        Ok(Jws {
            alg,
            kid: header_fields
                .get("kid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            signed: format!("{header}.{payload}"),
            signature: base64url(signature).ok_or("the JWT signature is not base64url")?,
            claims,
        })
    }

    /// Checks the signature against the keys that fit the algorithm (and the `kid`).
    fn verify(&self, jwks: &Jwks) -> Result<(), String> {
        let candidates = jwks
            .keys
            .iter()
            .filter(|k| self.kid.is_none() || k.kid == self.kid)
            .filter(|k| {
                matches!(
                    (&k.key, self.alg.as_str()),
                    (PublicKey::Rsa { .. }, "RS256")
                        | (PublicKey::P256(_), "ES256")
                        | (PublicKey::Ed25519(_), "EdDSA")
                )
            });
        let message = self.signed.as_bytes();
        for jwk in candidates {
            let verified = match &jwk.key {
                PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                    .verify(
                        &signature::RSA_PKCS1_2048_8192_SHA256,
                        message,
                        &self.signature,
                    )
                    .is_ok(),
                PublicKey::P256(point) => {
                    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(message, &self.signature)
                        .is_ok()
                }
                PublicKey::Ed25519(key) => UnparsedPublicKey::new(&signature::ED25519, key)
                    .verify(message, &self.signature)
                    .is_ok(),
            };
            if verified {
                return Ok(());
            }
        }
        Err("the token's signature does not verify with the issuer's keys".into())
    }
}

fn base64url(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::json;

    const PUBLIC_URL: &str = "https://gw.example";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A signing key and its JWK.
    enum Signer {
        Ed(Ed25519KeyPair),
        Ec(EcdsaKeyPair),
    }

    impl Signer {
        fn ed25519() -> Signer {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
        }

        fn p256() -> Signer {
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Signer::Ec(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
        }

        fn jwk(&self, kid: &str) -> Value {
            match self {
                Signer::Ed(key) => {
                    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(key.public_key().as_ref())})
                }
                Signer::Ec(key) => {
                    let point = key.public_key().as_ref();
                    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])})
                }
            }
        }

        fn token(&self, kid: &str, claims: &Value) -> String {
            let alg = match self {
                Signer::Ed(_) => "EdDSA",
                Signer::Ec(_) => "ES256",
            };
            let header = b64(json!({"alg": alg, "kid": kid, "typ": "JWT"})
                .to_string()
                .as_bytes());
            let signed = format!("{header}.{}", b64(claims.to_string().as_bytes()));
            let signature = match self {
                Signer::Ed(key) => key.sign(signed.as_bytes()).as_ref().to_vec(),
                Signer::Ec(key) => key
                    .sign(&SystemRandom::new(), signed.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
            };
            format!("{signed}.{}", b64(&signature))
        }
    }

    fn validator(jwks: &Value, dir: &std::path::Path) -> Validator {
        let path = dir.join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        let settings = OauthSettings {
            issuer: "https://idp.example".into(),
            jwks: JwksSource::File(path),
            required_scopes: vec!["mcp".into()],
            claim_rules: vec![
                ClaimRuleSpec {
                    claim: "groups".into(),
                    value: "support".into(),
                    grant: "support".into(),
                },
                ClaimRuleSpec {
                    claim: "scope".into(),
                    value: "admin".into(),
                    grant: "admins".into(),
                },
                ClaimRuleSpec {
                    claim: "sub".into(),
                    value: "robot-7".into(),
                    grant: "robots".into(),
                },
            ],
        };
        Validator::new(settings, PUBLIC_URL.into()).unwrap()
    }

    fn claims(now: i64) -> Value {
        json!({"iss": "https://idp.example", "aud": PUBLIC_URL, "sub": "alice", "exp": now + 300,
               "scope": "mcp read", "groups": ["support"]})
    }

    #[test]
    fn tokens_are_checked_for_signature_issuer_audience_time_scope_and_grant() {
        let dir = std::env::temp_dir().join(format!(
            "toolgate-oauth-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (ed, ec, stranger) = (Signer::ed25519(), Signer::p256(), Signer::ed25519());
        let v = validator(
            &json!({"keys": [ed.jwk("ed"), ec.jwk("ec"), {"kty": "oct", "k": "c2VjcmV0"}]}),
            &dir,
        );
        let now = 1_800_000_000;
        let check = |token: &str| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(v.validate(token, "mail", now))
        };
        let ok = check(&ed.token("ed", &claims(now))).unwrap();
        assert_eq!(
            (ok.grant.as_str(), ok.subject.as_deref()),
            ("support", Some("alice"))
        );
        assert!(check(&ec.token("ec", &claims(now))).is_ok(), "ES256");
        let mut per_server = claims(now);
        per_server["aud"] = json!(["other", format!("{PUBLIC_URL}/mcp/mail")]);
        assert!(
            check(&ed.token("ed", &per_server)).is_ok(),
            "the server's own URL is an audience"
        );

        let refused = |claims: Value, signer: &Signer, kid: &str, needle: &str| match check(
            &signer.token(kid, &claims),
        ) {
            Err(TokenRefusal::Unauthorized(why)) => {
                assert!(why.contains(needle), "{why} lacks {needle}")
            }
            other => panic!("expected a 401 naming {needle}, got {other:?}"),
        };
        refused(claims(now), &stranger, "ed", "signature");
        refused(claims(now), &ed, "ec", "signature"); // a key of the wrong type for the kid
        let with = |key: &str, value: Value| {
            let mut c = claims(now);
            c[key] = value;
            c
        };
        refused(
            with("iss", json!("https://evil.example")),
            &ed,
            "ed",
            "issuer",
        );
        refused(
            with("aud", json!("https://other.example")),
            &ed,
            "ed",
            "audience",
        );
        refused(
            with("aud", json!(format!("{PUBLIC_URL}/mcp/files"))),
            &ed,
            "ed",
            "audience",
        );
        refused(with("exp", json!(now - 61)), &ed, "ed", "expired");
        refused(with("nbf", json!(now + 61)), &ed, "ed", "not valid yet");
        let mut no_exp = claims(now);
        no_exp.as_object_mut().unwrap().remove("exp");
        refused(no_exp, &ed, "ed", "no expiry");
        assert!(
            check(&ed.token("ed", &with("exp", json!(now - 30)))).is_ok(),
            "within the leeway"
        );

        assert_eq!(
            check(&ed.token("ed", &with("scope", json!("read")))),
            Err(TokenRefusal::InsufficientScope(vec!["mcp".into()]))
        );
        let mut by_scope = with("groups", json!([]));
        by_scope["scope"] = json!("mcp admin");
        let admin = check(&ed.token("ed", &by_scope)).unwrap();
        assert_eq!(admin.grant, "admins", "a scope word maps too");
        let mut robot = with("groups", json!([]));
        robot["sub"] = json!("robot-7");
        assert_eq!(
            check(&ed.token("ed", &robot)).unwrap().grant,
            "robots",
            "a string claim maps by equality"
        );
        assert_eq!(
            check(&ed.token("ed", &with("groups", json!(["sales"])))),
            Err(TokenRefusal::NoGrant)
        );

        // alg none, HMAC, and garbage are refused before any key is tried.
        let header = b64(br#"{"alg":"none"}"#);
        let payload = b64(claims(now).to_string().as_bytes());
        assert!(
            matches!(check(&format!("{header}.{payload}.")), Err(TokenRefusal::Unauthorized(w)) if w.contains("not accepted"))
        );
        let hs = b64(br#"{"alg":"HS256"}"#);
        assert!(
            matches!(check(&format!("{hs}.{payload}.c2ln")), Err(TokenRefusal::Unauthorized(w)) if w.contains("not accepted"))
        );
        assert!(check("not-a-jwt").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_jwks_without_usable_keys_is_refused() {
        assert!(
            Jwks::parse(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#)
                .unwrap_err()
                .contains("no RSA")
        );
        assert!(Jwks::parse(b"[]").unwrap_err().contains("keys"));
        assert!(
            Jwks::parse(br#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}"#)
                .is_err()
        );
    }
}
