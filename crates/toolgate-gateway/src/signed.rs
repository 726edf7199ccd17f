//! Tokens that carry their own data and prove that a gateway of this deployment made them:
//! `<prefix><payload>.<tag>`, the payload in base64url, the tag an HMAC-SHA256 of prefix and
//! payload under a 32-byte key every replica reads from the shared store. They carry the
//! `requestState` of approvals asked in-band ([`crate::approval_state`]) and, in cluster
//! mode, session ids ([`crate::session::SessionSeal`]); each use has its own key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

/// Makes and checks signed tokens under one key.
pub(crate) struct Signer(hmac::Key);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// The signer of `secret` (32 random bytes shared by every replica).
    pub(crate) fn new(secret: &[u8; 32]) -> Signer {
        Signer(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A token carrying `payload`.
    pub(crate) fn sign(&self, prefix: &str, payload: &[u8]) -> String {
        let signed = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(payload));
        let tag = URL_SAFE_NO_PAD.encode(hmac::sign(&self.0, signed.as_bytes()).as_ref());
        format!("{signed}.{tag}")
    }

    /// The payload `token` carries, if this signer made it with `prefix`, unaltered. The
    /// tag is checked (in constant time) before the payload is decoded.
    pub(crate) fn open(&self, prefix: &str, token: &str) -> Option<Vec<u8>> {
        let (signed, tag) = token.rsplit_once('.')?;
        let payload = signed.strip_prefix(prefix)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.0, signed.as_bytes(), &tag).ok()?;
        URL_SAFE_NO_PAD.decode(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_unaltered_under_its_key_and_prefix_only() {
        let signer = Signer::new(&[7; 32]);
        let token = signer.sign("x1.", b"payload");
        assert_eq!(signer.open("x1.", &token).as_deref(), Some(&b"payload"[..]));
        assert_eq!(signer.open("x2.", &token), None, "another prefix");
        assert_eq!(
            Signer::new(&[8; 32]).open("x1.", &token),
            None,
            "another key"
        );
        let (signed, tag) = token.rsplit_once('.').unwrap();
        let other = signer.sign("x1.", b"another");
        let (other_signed, _) = other.rsplit_once('.').unwrap();
        assert_eq!(signer.open("x1.", &format!("{other_signed}.{tag}")), None);
        let mut flipped = tag.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(signer.open("x1.", &format!("{signed}.{flipped}")), None);
        for junk in ["", "x1.", "x1..", "x1.a.b"] {
            assert_eq!(signer.open("x1.", junk), None, "{junk:?}");
        }
    }
}
