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
pub use settings::{KeyRole, ServiceAuthConfig, TokenSettings, WhenUnset};
pub use store::{MemoryTokenStore, Rotation, StoreError, TokenStore};
pub use token::{
    Claims, DEFAULT_KEY_ID, Issued, TokenError, TokenKeys, TokenPolicy, TokenSigner, TokenUse,
};

use serde::Deserialize;

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
