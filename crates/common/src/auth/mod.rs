//! Access and refresh tokens: JWTs the gateway issues at sign-in and every
//! service that accepts them (the gateway's REST API, chat's WebSocket
//! upgrade) verifies with the same key ([`token`]), configured once
//! ([`settings`]); revoked tokens and refresh families ([`store`]); and the
//! service tokens internal gRPC calls carry ([`service`], checked by
//! [`grpc`]).

pub mod grpc;
pub mod service;
pub mod settings;
pub mod store;
pub mod token;

pub use grpc::{ADMIN_CALLER, GrpcAccess, ServiceAuthLayer, ServiceCaller};
pub use service::{
    CallerKey, ServiceAuthError, ServiceCredentials, ServiceInterceptor, ServiceSecret,
    ServiceVerifier,
};
pub use settings::{KeyRole, ServiceAuthConfig, TokenSettings, WhenUnset, admin_token};
pub use store::{MemoryTokenStore, Rotation, StoreError, TokenStore};
pub use token::{
    Claims, DEFAULT_KEY_ID, Issued, TokenError, TokenKeys, TokenPolicy, TokenSigner, TokenUse,
};

/// Whether `given` is `expected`, compared over SHA-256 digests in
/// constant time: the time taken tells neither where the first difference
/// is nor how long the secret is (admin tokens and the like).
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The token in an `Authorization` header value, when its scheme is
/// `Bearer`.
pub fn bearer(authorization: &str) -> Option<&str> {
    authorization.strip_prefix("Bearer ").map(str::trim)
}

/// The claims of the valid access token in `headers`' `Authorization:
/// Bearer`, for a service behind the gateway that verifies its tokens;
/// otherwise the `401` problem to answer with (one answer for every
/// refusal: the reason goes to the debug log, not to the caller).
pub fn access_claims(
    headers: &actix_web::http::header::HeaderMap,
    signer: &TokenSigner,
) -> Result<Claims, crate::problem::Problem> {
    let unauthorized = |why: &str| {
        crate::problem::Problem::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            why,
        )
    };
    let token = headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or_else(|| unauthorized("an Authorization: Bearer access token is required"))?;
    let claims = signer.verify(token).map_err(|why| {
        tracing::debug!(reason = %why, "refused an access token");
        unauthorized("the access token is invalid or expired")
    })?;
    if claims.user_id().is_none() {
        return Err(unauthorized("the access token is invalid or expired"));
    }
    Ok(claims)
}
