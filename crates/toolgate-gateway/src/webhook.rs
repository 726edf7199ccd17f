//! The approvals webhook (SPEC §2.1 `[approvals]`, §6): each new approval request is
//! announced by one JSON POST, signed `X-Toolgate-Signature: sha256=<hex HMAC-SHA256 of the
//! body>` with the configured secret, so the receiver can tell it came from this gateway.
//!
//! Announcing never holds up the call that opened the request: announcements wait in a
//! bounded queue and one task delivers them, retrying with back-off. A receiver that is down
//! costs only the announcement — the request can still be decided with the CLI or the admin
//! API — and each failure is logged.

use crate::config::WebhookSettings;
use crate::http_upstream::{build_client, post_json, HttpClient};
use bytes::Bytes;
use http::HeaderValue;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;
use toolgate_store::audit::hex;

/// Announcements waiting for delivery at most; past it new ones are dropped (and logged).
pub const QUEUE: usize = 1000;

/// Delivery attempts per announcement.
const ATTEMPTS: u32 = 4;

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-toolgate-signature";

/// Announces new approval requests.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The delivery task's queue.
    queue: mpsc::Sender<Value>,
}

impl Webhook {
    /// Starts the delivery task (needs a tokio runtime).
    pub fn start(settings: &WebhookSettings) -> Result<Webhook, String> {
        let client = build_client(None, ATTEMPT_TIMEOUT)?;
        let (queue, announcements) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(client, settings.clone(), announcements));
        Ok(Webhook { queue })
    }

    /// Queues `announcement`; a full queue drops it (logged).
    pub fn announce(&self, announcement: Value) {
        if let Err(e) = self.queue.try_send(announcement) {
            let id = match &e {
                mpsc::error::TrySendError::Full(v) | mpsc::error::TrySendError::Closed(v) => {
                    v.get("id").cloned().unwrap_or(Value::Null)
                }
            };
            tracing::error!(target: "toolgate::approvals", approval = %id, "approval webhook not told of a new request (its queue of {QUEUE} is full); the request can still be decided with `toolgate approvals`");
        }
    }
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex(ring::hmac::sign(&key, body).as_ref()))
}

async fn deliver(client: HttpClient, settings: WebhookSettings, mut queue: mpsc::Receiver<Value>) {
    while let Some(announcement) = queue.recv().await {
        let body = Bytes::from(announcement.to_string());
        let id = announcement.get("id").cloned().unwrap_or(Value::Null);
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            match post(&client, &settings, body.clone()).await {
                Ok(()) => {
                    tracing::info!(target: "toolgate::approvals", approval = %id, "approval webhook told of a new request");
                    break;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(target: "toolgate::approvals", approval = %id, attempt, "approval webhook failed, retrying in {} ms: {e}", backoff.as_millis());
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => {
                    tracing::error!(target: "toolgate::approvals", approval = %id, "approval webhook failed {ATTEMPTS} times, giving up (the request can still be decided with `toolgate approvals`): {e}");
                }
            }
        }
    }
}

async fn post(client: &HttpClient, settings: &WebhookSettings, body: Bytes) -> Result<(), String> {
    let signed =
        HeaderValue::from_str(&signature(&settings.secret, &body)).map_err(|e| e.to_string())?;
    let headers = [
        (SIGNATURE_HEADER, signed),
        (
            "x-toolgate-event",
            HeaderValue::from_static("approval_requested"),
        ),
    ];
    post_json(client, &settings.url, &headers, body, ATTEMPT_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
