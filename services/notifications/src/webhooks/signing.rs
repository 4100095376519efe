//! Webhook signatures by the Standard Webhooks convention, so receivers
//! verify deliveries with its published libraries (or Svix's):
//!
//! - `webhook-id`: the delivery's id, the same on every retry;
//! - `webhook-timestamp`: Unix seconds of this attempt;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
//!   one per secret, space-separated, so that during a rotation both the
//!   old and the new secret sign and a receiver holding either accepts.
//!
//! Secrets are `whsec_` + base64 of 24 random bytes (what the reference
//! libraries generate); the key is the decoded bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a webhook secret is whsec_ followed by base64 of 24 to 64 bytes")]
pub struct InvalidSecret;

impl Secret {
    /// A new random secret.
    pub fn generate() -> Self {
        Self {
            key: uuid::Uuid::new_v4()
                .as_bytes()
                .iter()
                .chain(&uuid::Uuid::new_v4().as_bytes()[..8])
                .copied()
                .collect(),
        }
    }

    /// `whsec_…`, as shown to its owner.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text.strip_prefix(PREFIX).ok_or(InvalidSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| InvalidSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(InvalidSecret);
        }
        Ok(Self { key })
    }

    /// The secret in its `whsec_` form.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// `v1,<signature>` of one delivery attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length.
            Err(_) => return String::new(),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header for `secrets` (the current one, and the
/// previous one while a rotation's grace period lasts).
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `header` carries a valid signature by `secret`, compared in
/// constant time: what a receiver does.
pub fn verifies(secret: &Secret, header: &str, id: &str, timestamp: i64, body: &[u8]) -> bool {
    let expected = secret.sign(id, timestamp, body);
    header
        .split(' ')
        .any(|given| common::auth::same_secret(given.as_bytes(), expected.as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn signatures_match_the_standard_webhooks_reference_vector() {
        // The vector the reference libraries test their `sign` with.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(ID, TIMESTAMP, BODY),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn during_a_rotation_a_receiver_with_either_secret_verifies() {
        let old = Secret::generate();
        let new = Secret::generate();
        let header = signature_header(&[new.clone(), old.clone()], ID, TIMESTAMP, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(verifies(&old, &header, ID, TIMESTAMP, BODY));
        assert!(verifies(&new, &header, ID, TIMESTAMP, BODY));
        let other = Secret::generate();
        assert!(!verifies(&other, &header, ID, TIMESTAMP, BODY));
        assert!(
            !verifies(&new, &header, ID, TIMESTAMP + 1, BODY),
            "the timestamp is signed"
        );
        assert!(
            !verifies(&new, &header, ID, TIMESTAMP, b"{}"),
            "the body is signed"
        );
    }

    #[test]
    fn a_generated_secret_reads_back_and_never_prints() {
        let secret = Secret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap(), secret);
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        for bad in ["", "whsec_", "secret", "whsec_!!!", "whsec_c2hvcnQ="] {
            assert_eq!(Secret::parse(bad), Err(InvalidSecret), "{bad}");
        }
    }
}
