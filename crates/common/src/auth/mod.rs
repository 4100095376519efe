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

/// The token in an `Authorization` header value, when its scheme is
/// `Bearer`.
pub fn bearer(authorization: &str) -> Option<&str> {
    authorization.strip_prefix("Bearer ").map(str::trim)
}
