//! `Idempotency-Key` on room creation (the IETF httpapi draft, as the
//! gateway's other creates have it): a retry of a creation whose answer was
//! lost gets the same `201` again, and the key used with another body is
//! `422`. Chat owns no database: what a key was used for is kept where the
//! rooms are (Redis, or this process when embedded), for a day.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use common::problem::Problem;
use sha2::{Digest, Sha256};

use crate::broker::{Broker, BrokerError};

/// How long a key is remembered, as Stripe keeps them.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// One caller's key for one creation request.
pub struct Claim {
    /// Names the key with its caller; stored with the room it created.
    pub id: String,
    /// Names the request's body, in its canonical form.
    fingerprint: String,
}

impl Claim {
    /// The request's key, if it has one: 1 to 255 visible ASCII
    /// characters, or `400 invalid_idempotency_key`.
    pub fn from_request(req: &HttpRequest, user: u64, body: &str) -> Result<Option<Self>, Problem> {
        let Some(value) = req.headers().get("idempotency-key") else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| {
                (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
            })
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                )
            })?;
        Ok(Some(Self {
            id: hex(Sha256::new()
                .chain_update(format!("user:{user}\n"))
                .chain_update(key)),
            fingerprint: hex(Sha256::new().chain_update(body)),
        }))
    }

    /// Records the key's first use; `422 idempotency_key_reused` when it
    /// was first used for another body.
    pub async fn check(&self, broker: &dyn Broker) -> Result<(), Problem> {
        match broker.remember(&self.id, &self.fingerprint, KEY_TTL).await {
            Ok(None) => Ok(()),
            Ok(Some(first)) if first == self.fingerprint => Ok(()),
            Ok(Some(_)) => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request",
            )),
            Err(BrokerError::Full) => Err(Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "too_many_rooms",
                "no more rooms can be created here",
            )),
            Err(other) => Err(crate::routes::unavailable("the room", &other)),
        }
    }
}

fn hex(digest: Sha256) -> String {
    format!("{:x}", digest.finalize())
}
