//! Access tokens: JWTs signed with HMAC-SHA-256 (RFC 7519, `HS256` only).
//! The gateway issues them at sign-in; every service that accepts them
//! (the gateway's REST API, chat's WebSocket upgrade) verifies them with
//! the same shared key.
//!
//! Only the one algorithm this gateway issues is accepted: a token naming
//! `none` or any other algorithm is rejected before its signature is even
//! looked at, which closes the classic algorithm-confusion holes. The
//! signature is compared in constant time; `exp` is required.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The username at sign-in, for display (chat messages, mentions).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub exp: u64,
    pub iat: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// The token in an `Authorization` header value, when its scheme is
/// `Bearer`.
pub fn bearer(authorization: &str) -> Option<&str> {
    authorization.strip_prefix("Bearer ").map(str::trim)
}

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

/// The access token a request carries: from its `Authorization: Bearer`
/// header when it has an `Authorization` header at all, otherwise from the
/// `access_token` query parameter, for browsers, which cannot set headers
/// on a WebSocket upgrade.
pub fn request_token(req: &actix_web::HttpRequest) -> Option<String> {
    if let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        return header.to_str().ok().and_then(bearer).map(str::to_owned);
    }
    actix_web::web::Query::<TokenQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().access_token)
}

pub struct TokenSigner {
    key: Vec<u8>,
    ttl: Duration,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenSigner {
    pub fn new(key: &[u8], ttl: Duration) -> Self {
        Self {
            key: key.to_vec(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length")
    }

    /// A token for `user_id` (called `name`), valid for the configured
    /// lifetime.
    pub fn issue(&self, user_id: u64, name: &str) -> String {
        self.issue_at(user_id, name, now_secs())
    }

    pub fn issue_at(&self, user_id: u64, name: &str, issued_at: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = Claims {
            sub: user_id.to_string(),
            name: name.to_owned(),
            iat: issued_at,
            exp: issued_at + self.ttl.as_secs(),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// The claims of a token signed with this key that has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(header_and_payload(token).as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.exp <= now_secs() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn header_and_payload(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(signed, _)| signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        TokenSigner::new(
            b"a test key of reasonable length!",
            Duration::from_secs(900),
        )
    }

    #[test]
    fn issued_tokens_verify() {
        let token = signer().issue(42, "alice");
        let claims = signer().verify(&token).unwrap();
        assert_eq!(claims.sub, "42");
        assert_eq!(claims.exp - claims.iat, 900);
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let token = signer().issue(42, "alice");
        let (header, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"1","exp":99999999999,"iat":0}"#);
        let tampered = format!("{header}.{forged}.{signature}");
        assert_eq!(signer().verify(&tampered), Err(TokenError::Signature));
    }

    #[test]
    fn another_key_fails_the_signature() {
        let token = TokenSigner::new(b"some other key", Duration::from_secs(60)).issue(42, "alice");
        assert_eq!(signer().verify(&token), Err(TokenError::Signature));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"1","exp":99999999999,"iat":0}"#);
        for alg in ["none", "None", "HS512", "RS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let token = format!("{header}.{payload}.");
            assert_eq!(signer().verify(&token), Err(TokenError::Algorithm), "{alg}");
        }
    }

    #[test]
    fn expired_tokens_are_refused() {
        let token = signer().issue_at(42, "alice", now_secs() - 1000);
        assert_eq!(signer().verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn garbage_is_malformed() {
        for token in ["", "abc", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(
                signer().verify(token),
                Err(TokenError::Malformed),
                "{token}"
            );
        }
    }
}
