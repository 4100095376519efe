//! Who is calling: the access token of a request, checked for signature
//! and claims ([`common::auth::TokenSigner`]) and against the revocation
//! store ([`common::auth::TokenStore`]).
//!
//! Every refused token gets the same answer, `401 unauthorized` saying the
//! token is invalid; why (expired, wrong audience, revoked, ...) is logged
//! at debug level only, so a prober learns nothing about which check it
//! failed. While the store cannot be reached, access tokens are accepted on
//! their signature alone (they live minutes) and
//! `gateway_token_store_errors_total` counts it; refreshing fails closed.

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use common::auth::{Claims, TokenError, TokenSigner, TokenStore};
use futures_util::future::LocalBoxFuture;

use crate::problem::ApiError;

/// The one answer for every refused token.
pub const INVALID_TOKEN: &str = "the access token is invalid, expired or revoked";

/// What checks tokens, as app data of every route that needs it.
#[derive(Clone)]
pub struct Authenticator {
    pub signer: Arc<TokenSigner>,
    pub store: Arc<dyn TokenStore>,
}

impl Authenticator {
    /// The claims of `token` if it is a valid, unrevoked access token.
    pub async fn check(&self, token: &str) -> Result<Claims, ApiError> {
        let refused = |why: TokenError| {
            tracing::debug!(reason = %why, "refused an access token");
            ApiError::Unauthorized(INVALID_TOKEN.into())
        };
        let claims = self.signer.verify(token).map_err(refused)?;
        if claims.user_id().is_none() {
            return Err(refused(TokenError::Malformed));
        }
        let family = claims.fam.as_deref().unwrap_or(&claims.jti);
        match self.store.is_revoked(family, &claims.jti).await {
            Ok(false) => Ok(claims),
            Ok(true) => Err(refused(TokenError::Revoked)),
            Err(error) => {
                metrics::counter!("gateway_token_store_errors_total").increment(1);
                // Logged once per outage by the store's guard.
                tracing::debug!(%error, "cannot check revocations; the token's signature decides");
                Ok(claims)
            }
        }
    }
}

impl Authenticator {
    /// Redeems a browser ticket: the claims of the access token it stands
    /// for, once. A ticket redeemed before, expired or unknown gets the one
    /// invalid-token answer; a store that cannot answer fails closed, since
    /// without it nothing says the ticket is unused.
    pub async fn redeem(&self, ticket: &str) -> Result<(String, Claims), ApiError> {
        let token = match self.store.take_ticket(ticket).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                tracing::debug!("refused an unknown, used or expired ticket");
                return Err(ApiError::Unauthorized(INVALID_TOKEN.into()));
            }
            Err(error) => {
                metrics::counter!("gateway_token_store_errors_total").increment(1);
                tracing::warn!(%error, "cannot redeem a ticket");
                return Err(ApiError::Unavailable {
                    service: "token store".into(),
                    retry_after: std::time::Duration::from_secs(1),
                });
            }
        };
        let claims = self.check(&token).await?;
        Ok((token, claims))
    }
}

/// The bearer token of `req`: `Ok(None)` without an `Authorization`
/// header, `401` for one that does not hold a bearer token.
fn bearer(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    header
        .to_str()
        .ok()
        .and_then(common::auth::bearer)
        .map(|t| Some(t.to_owned()))
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into())
        })
}

fn authenticator(req: &HttpRequest) -> Result<Authenticator, ApiError> {
    req.app_data::<web::Data<Authenticator>>()
        .map(|a| a.get_ref().clone())
        .ok_or_else(|| ApiError::Unauthorized("authentication is not configured".into()))
}

/// A signed-in caller: the claims of a valid `Authorization: Bearer` token.
#[derive(Clone, Debug)]
pub struct Session {
    pub claims: Claims,
    pub user_id: u64,
    /// The token itself, for what must carry it on (a ticket).
    pub token: String,
}

impl FromRequest for Session {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let prepared = bearer(req).and_then(|token| {
            let token = token.ok_or_else(|| {
                ApiError::Unauthorized("an Authorization: Bearer token is required".into())
            })?;
            Ok((authenticator(req)?, token))
        });
        Box::pin(async move {
            let (auth, token) = prepared?;
            let claims = auth.check(&token).await?;
            let user_id = claims.user_id().unwrap_or_default();
            Ok(Self {
                claims,
                user_id,
                token,
            })
        })
    }
}

/// The user a valid `Authorization: Bearer` token names.
#[derive(Clone, Copy, Debug)]
pub struct AuthUser(pub u64);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = Session::from_request(req, payload);
        Box::pin(async move { Ok(Self(session.await?.user_id)) })
    }
}

/// Who is asking, on routes open to everyone: anonymous without an
/// `Authorization` header; a user with a valid token; `401` for a header
/// that does not hold one (a bad token is never quietly read as anonymous).
#[derive(Clone, Copy, Debug)]
pub struct Viewer(pub Option<u64>);

impl Viewer {
    /// Whether the viewer is the user `id`, who may see their private
    /// fields.
    pub fn is(&self, id: u64) -> bool {
        self.0 == Some(id)
    }
}

impl FromRequest for Viewer {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if !req
            .headers()
            .contains_key(actix_web::http::header::AUTHORIZATION)
        {
            return Box::pin(async { Ok(Self(None)) });
        }
        let session = Session::from_request(req, payload);
        Box::pin(async move { Ok(Self(Some(session.await?.user_id))) })
    }
}

#[derive(serde::Deserialize)]
struct TicketQuery {
    ticket: Option<String>,
    access_token: Option<String>,
}

/// The checked access token of a request browsers make without headers
/// (a WebSocket upgrade, an `EventSource`): from `Authorization: Bearer`,
/// or from a single-use `?ticket=`. A token in the URL is refused: URLs
/// end up in logs, proxies' histories and `Referer`s.
pub async fn token_or_ticket(req: &HttpRequest) -> Result<String, ApiError> {
    let auth = req
        .app_data::<web::Data<Authenticator>>()
        .ok_or_else(|| ApiError::Unauthorized("authentication is not configured".into()))?;
    if let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let token = header
            .to_str()
            .ok()
            .and_then(common::auth::bearer)
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into())
            })?;
        auth.check(token).await?;
        return Ok(token.to_owned());
    }
    let query = web::Query::<TicketQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or(TicketQuery {
            ticket: None,
            access_token: None,
        });
    match query {
        TicketQuery {
            ticket: Some(ticket),
            ..
        } => Ok(auth.redeem(&ticket).await?.0),
        TicketQuery {
            access_token: Some(_),
            ..
        } => Err(ApiError::Unauthorized(
            "access tokens are not accepted in URLs: exchange one for a ticket \
             (POST /api/v1/auth/ticket) and pass ?ticket="
                .into(),
        )),
        _ => Err(ApiError::Unauthorized(
            "an access token is required (Authorization: Bearer, or ?ticket= from \
             POST /api/v1/auth/ticket)"
                .into(),
        )),
    }
}
