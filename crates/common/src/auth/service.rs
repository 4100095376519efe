//! Service credentials: who is calling an internal gRPC API.
//!
//! Every internal call carries `authorization: Bearer <jwt>`, an HS256
//! token naming its caller (`sub`, and the key id `service:<caller>`) and
//! the service it is meant for (`aud`), living [`SERVICE_TOKEN_TTL`].
//! A token for one service is refused by every other, so a service that
//! receives calls cannot replay them elsewhere.
//!
//! Each caller signs with its own key, HMAC-SHA256(platform secret,
//! `"service:" + name`). A service that serves gRPC holds the platform
//! secret, derives its callers' keys and checks their tokens; a service
//! that only calls (the gateway) can be given just its own derived key
//! (`SERVICE_KEY`, printed by `platform service-key <name>`), so whoever
//! takes it over can sign as the gateway and as nothing else — not as
//! `admin`, which the admin RPCs require.
//!
//! What this does not promise: a service holding the platform secret can
//! sign as anyone; isolation between services that serve gRPC needs
//! per-service key pairs or mTLS, which this platform does not have yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

use super::settings::MIN_SECRET_BYTES;

/// How long one service token is valid. Callers mint a new one when half
/// of it is gone, so a clock skew below half of it never refuses a call.
pub const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(300);

const ISSUER: &str = "platform-services";
const KEY_ID_PREFIX: &str = "service:";
/// Tolerated clock difference between two services.
const LEEWAY: Duration = Duration::from_secs(30);
/// Verified tokens remembered, so a caller's token (reused for minutes)
/// costs one signature check, not one per call.
const VERIFIED_CACHE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServiceAuthError {
    #[error("the service secret must be at least {MIN_SECRET_BYTES} bytes")]
    ShortSecret,
    #[error("the service key is not the base64 of a 32-byte key")]
    BadKey,
    #[error("the call carries no service token")]
    Missing,
    #[error("the service token is invalid: {0}")]
    Invalid(String),
    #[error("cannot sign a service token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The platform's service secret: every caller's key derives from it.
#[derive(Clone)]
pub struct ServiceSecret(Arc<[u8]>);

impl std::fmt::Debug for ServiceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceSecret(***)")
    }
}

impl ServiceSecret {
    pub fn new(secret: &[u8]) -> Result<Self, ServiceAuthError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ServiceAuthError::ShortSecret);
        }
        Ok(Self(secret.into()))
    }

    /// A secret only this process knows (development, tests).
    pub fn random() -> Self {
        let bytes: Vec<u8> = (0..2)
            .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
            .collect();
        Self(bytes.into())
    }

    /// The key `caller` signs its tokens with.
    pub fn key_for(&self, caller: &str) -> CallerKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(KEY_ID_PREFIX.as_bytes());
        mac.update(caller.as_bytes());
        CallerKey {
            caller: caller.into(),
            key: mac.finalize().into_bytes().into(),
        }
    }
}

/// One caller's signing key.
#[derive(Clone)]
pub struct CallerKey {
    caller: Arc<str>,
    key: [u8; 32],
}

impl std::fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallerKey({}, ***)", self.caller)
    }
}

impl CallerKey {
    /// The key as operators pass it in `SERVICE_KEY` (base64url).
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key)
    }

    pub fn decode(caller: &str, encoded: &str) -> Result<Self, ServiceAuthError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .map_err(|_| ServiceAuthError::BadKey)?;
        let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| ServiceAuthError::BadKey)?;
        Ok(Self {
            caller: caller.into(),
            key,
        })
    }

    pub fn caller(&self) -> &str {
        &self.caller
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ServiceClaims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs this service's calls; one per process, shared by every client.
pub struct ServiceCredentials {
    caller: Arc<str>,
    encoding: EncodingKey,
    /// The current token per callee, with the time a new one is due.
    minted: Mutex<HashMap<String, (AsciiMetadataValue, u64)>>,
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceCredentials({})", self.caller)
    }
}

impl ServiceCredentials {
    pub fn new(key: &CallerKey) -> Self {
        Self {
            caller: key.caller.clone(),
            encoding: EncodingKey::from_secret(&key.key),
            minted: Mutex::new(HashMap::new()),
        }
    }

    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// A fresh token for calling `audience`, unmemoised.
    pub fn mint(&self, audience: &str, ttl: Duration) -> Result<String, ServiceAuthError> {
        let now = now_secs();
        let claims = ServiceClaims {
            iss: ISSUER.to_owned(),
            sub: self.caller.to_string(),
            aud: audience.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(format!("{KEY_ID_PREFIX}{}", self.caller));
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(ServiceAuthError::Sign)
    }

    /// The `authorization` value for a call to `audience`: the current
    /// token, or a new one when half of its life is gone.
    pub fn authorization(&self, audience: &str) -> Result<AsciiMetadataValue, ServiceAuthError> {
        let now = now_secs();
        let mut minted = self.minted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((value, renew_at)) = minted.get(audience)
            && now < *renew_at
        {
            return Ok(value.clone());
        }
        let token = self.mint(audience, SERVICE_TOKEN_TTL)?;
        let value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| ServiceAuthError::Invalid(e.to_string()))?;
        minted.insert(
            audience.to_owned(),
            (value.clone(), now + SERVICE_TOKEN_TTL.as_secs() / 2),
        );
        Ok(value)
    }

    /// A tonic interceptor stamping calls to `audience`, for generated
    /// clients (`UserServiceClient::with_interceptor(channel, ...)`).
    pub fn interceptor(self: &Arc<Self>, audience: &str) -> ServiceInterceptor {
        ServiceInterceptor {
            credentials: self.clone(),
            audience: audience.into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServiceInterceptor {
    credentials: Arc<ServiceCredentials>,
    audience: Arc<str>,
}

impl tonic::service::Interceptor for ServiceInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value = self
            .credentials
            .authorization(&self.audience)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// Checks the tokens of the calls to one service.
pub struct ServiceVerifier {
    secret: ServiceSecret,
    audience: String,
    verified: Mutex<HashMap<String, (Arc<str>, u64)>>,
}

impl std::fmt::Debug for ServiceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceVerifier({})", self.audience)
    }
}

impl ServiceVerifier {
    /// Checks tokens meant for `audience` (this service's name).
    pub fn new(secret: ServiceSecret, audience: &str) -> Self {
        Self {
            secret,
            audience: audience.to_owned(),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The caller `token` was signed by, if it is valid for this service.
    pub fn verify(&self, token: &str) -> Result<Arc<str>, ServiceAuthError> {
        let now = now_secs();
        if let Some((caller, exp)) = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            && now <= exp + LEEWAY.as_secs()
        {
            return Ok(caller.clone());
        }
        let invalid = |reason: &str| ServiceAuthError::Invalid(reason.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ServiceAuthError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::HS256 {
            return Err(invalid("not HS256"));
        }
        let caller = header
            .kid
            .as_deref()
            .and_then(|kid| kid.strip_prefix(KEY_ID_PREFIX))
            .filter(|caller| !caller.is_empty())
            .ok_or_else(|| invalid("no service key id"))?;
        let key = self.secret.key_for(caller);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[self.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY.as_secs();
        let claims = jsonwebtoken::decode::<ServiceClaims>(
            token,
            &DecodingKey::from_secret(&key.key),
            &validation,
        )
        .map_err(|e| ServiceAuthError::Invalid(e.to_string()))?
        .claims;
        if claims.sub != caller {
            return Err(invalid("subject and key id differ"));
        }
        // A caller may not mint itself a token for ever.
        if claims.exp.saturating_sub(claims.iat) > SERVICE_TOKEN_TTL.as_secs() {
            return Err(invalid("lives longer than a service token may"));
        }
        let caller: Arc<str> = caller.into();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CACHE {
            verified.retain(|_, (_, exp)| now <= *exp);
            if verified.len() >= VERIFIED_CACHE {
                verified.clear();
            }
        }
        verified.insert(token.to_owned(), (caller.clone(), claims.exp));
        Ok(caller)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn secret() -> ServiceSecret {
        ServiceSecret::new(b"a-service-secret-of-at-least-32-bytes").unwrap()
    }

    #[test]
    fn a_token_names_its_caller_to_the_service_it_is_for() {
        let credentials = ServiceCredentials::new(&secret().key_for("gateway"));
        let token = credentials.mint("users", SERVICE_TOKEN_TTL).unwrap();
        let users = ServiceVerifier::new(secret(), "users");
        assert_eq!(&*users.verify(&token).unwrap(), "gateway");
        // Twice: the second answer comes from the cache.
        assert_eq!(&*users.verify(&token).unwrap(), "gateway");
    }

    #[test]
    fn a_token_for_one_service_is_refused_by_another() {
        let credentials = ServiceCredentials::new(&secret().key_for("gateway"));
        let token = credentials.mint("users", SERVICE_TOKEN_TTL).unwrap();
        let chat = ServiceVerifier::new(secret(), "chat");
        assert!(chat.verify(&token).is_err());
    }

    #[test]
    fn a_caller_cannot_sign_as_another_with_its_own_key() {
        // The gateway's key, with the admin's name in the key id.
        let gateway = secret().key_for("gateway");
        let forged = CallerKey {
            caller: "admin".into(),
            key: gateway.key,
        };
        let token = ServiceCredentials::new(&forged)
            .mint("users", SERVICE_TOKEN_TTL)
            .unwrap();
        let users = ServiceVerifier::new(secret(), "users");
        assert!(users.verify(&token).is_err());
    }

    #[test]
    fn tokens_signed_with_another_secret_or_too_long_lived_are_refused() {
        let other = ServiceSecret::new(b"another-service-secret-of-32-bytes!!").unwrap();
        let users = ServiceVerifier::new(secret(), "users");
        let foreign = ServiceCredentials::new(&other.key_for("gateway"))
            .mint("users", SERVICE_TOKEN_TTL)
            .unwrap();
        assert!(users.verify(&foreign).is_err());
        let forever = ServiceCredentials::new(&secret().key_for("gateway"))
            .mint("users", Duration::from_secs(86_400))
            .unwrap();
        assert!(users.verify(&forever).is_err());
        assert!(users.verify("not a token").is_err());
    }

    #[test]
    fn a_caller_key_survives_its_text_form_and_short_secrets_are_refused() {
        let key = secret().key_for("gateway");
        let decoded = CallerKey::decode("gateway", &key.encode()).unwrap();
        assert_eq!(decoded.key, key.key);
        assert!(CallerKey::decode("gateway", "short").is_err());
        assert!(ServiceSecret::new(b"too short").is_err());
    }

    #[test]
    fn the_authorization_value_is_reused_until_half_its_life_is_gone() {
        let credentials = ServiceCredentials::new(&secret().key_for("gateway"));
        let first = credentials.authorization("users").unwrap();
        let second = credentials.authorization("users").unwrap();
        assert_eq!(first, second);
        assert_ne!(first, credentials.authorization("search").unwrap());
    }
}
