//! Sign-in, token refresh with rotation, and logout.
//!
//! A sign-in starts a refresh family (see [`common::auth::store`]): the
//! answer holds a short-lived access token and a refresh token; each
//! refresh exchanges the family's newest refresh token for a new pair, and
//! presenting an older one revokes the family. Refreshing needs the token
//! store: while it is unreachable refreshing is refused (`503`), never
//! granted unchecked.

use common::json::JsonObject;
use std::time::{Duration, SystemTime};

use actix_web::{HttpRequest, HttpResponse, web};
use common::auth::{Issued, Rotation, StoreError, TokenError, TokenUse};
use platform_proto::users::v1 as pb;
use platform_proto::users::v1::user_service_client::UserServiceClient;
use serde::{Deserialize, Serialize};

use crate::Gateway;
use crate::auth::{INVALID_TOKEN, Session};
use crate::problem::{ApiError, ProblemBody};
use crate::upstream::{CallContext, RouteClass};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    /// A username or an email address.
    #[schema(min_length = 1, max_length = 254)]
    login: String,
    #[schema(max_length = 128)]
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Refresh {
    refresh_token: String,
}

/// A new access token, and the refresh token to get the next one.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Token {
    access_token: String,
    token_type: &'static str,
    /// Seconds the access token lives.
    expires_in: u64,
    refresh_token: String,
    /// Seconds the refresh token lives, unless rotated or revoked first.
    refresh_expires_in: u64,
}

fn signing_failed(error: TokenError) -> ApiError {
    ApiError::Internal(format!("cannot sign a token: {error}"))
}

fn store_down(error: StoreError) -> ApiError {
    metrics::counter!("gateway_token_store_errors_total").increment(1);
    tracing::warn!(%error, "refusing to start or refresh a session");
    ApiError::Unavailable {
        service: "token store".into(),
        retry_after: Duration::from_secs(1),
    }
}

fn remaining(until: SystemTime) -> Duration {
    until
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

impl Gateway {
    /// The access token of `refresh`'s family, and the answer holding both.
    fn token_pair(&self, user: &pb::User, refresh: Issued) -> Result<Token, ApiError> {
        let family = refresh.claims.fam.as_deref();
        let access = self
            .auth
            .signer
            .issue(user.id, &user.username, TokenUse::Access, family)
            .map_err(signing_failed)?;
        Ok(Token {
            expires_in: access.claims.exp - access.claims.iat,
            access_token: access.token,
            token_type: "Bearer",
            refresh_expires_in: refresh.claims.exp - refresh.claims.iat,
            refresh_token: refresh.token,
        })
    }

    fn refresh_ttl(&self) -> Duration {
        self.auth.signer.policy().refresh_ttl
    }
}

/// Exchange a username or email and a password for an access token and a
/// refresh token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, body = Token), (status = 401, body = ProblemBody)))]
pub(super) async fn login(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    ctx: CallContext,
    body: JsonObject<Login>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    crate::ratelimit::limit_attempts(&req, "login", &body.login, gw.limits.login).await?;
    let message = pb::VerifyCredentialsRequest {
        login: body.login,
        password: body.password,
    };
    let user = gw
        .users
        .call(&ctx, RouteClass::Auth, message, |ch, req| async move {
            UserServiceClient::new(ch).verify_credentials(req).await
        })
        .await?;
    let family = uuid::Uuid::new_v4().simple().to_string();
    let refresh = gw
        .auth
        .signer
        .issue(user.id, &user.username, TokenUse::Refresh, Some(&family))
        .map_err(signing_failed)?;
    gw.auth
        .store
        .start_family(&family, &refresh.claims.jti, gw.refresh_ttl())
        .await
        .map_err(store_down)?;
    Ok(HttpResponse::Ok().json(gw.token_pair(&user, refresh)?))
}

/// Exchange the newest refresh token of a sign-in for a new pair; an
/// older one revokes the sign-in (someone else holds its tokens).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = Refresh,
    responses((status = 200, body = Token), (status = 401, body = ProblemBody)))]
pub(super) async fn refresh(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    body: JsonObject<Refresh>,
) -> Result<HttpResponse, ApiError> {
    let refused = |why: TokenError| {
        tracing::debug!(reason = %why, "refused a refresh token");
        ApiError::Unauthorized(INVALID_TOKEN.into())
    };
    let claims = gw
        .auth
        .signer
        .verify_as(&body.refresh_token, TokenUse::Refresh)
        .map_err(refused)?;
    let (Some(user_id), Some(family)) = (claims.user_id(), claims.fam.clone()) else {
        return Err(refused(TokenError::Malformed));
    };
    // The user as they are now: a deleted account signs in no more, a
    // renamed one carries its new name.
    let found = gw
        .users
        .call(
            &ctx,
            RouteClass::Read,
            pb::GetUserRequest { id: user_id },
            |ch, req| async move { UserServiceClient::new(ch).get_user(req).await },
        )
        .await;
    let user = match found {
        Ok(user) => user,
        Err(ApiError::NotFound(_)) => {
            gw.auth
                .store
                .revoke_family(&family, gw.refresh_ttl())
                .await
                .map_err(store_down)?;
            return Err(refused(TokenError::Revoked));
        }
        Err(other) => return Err(other),
    };
    let next = gw
        .auth
        .signer
        .issue(user.id, &user.username, TokenUse::Refresh, Some(&family))
        .map_err(signing_failed)?;
    let rotation = gw
        .auth
        .store
        .rotate(&family, &claims.jti, &next.claims.jti, gw.refresh_ttl())
        .await
        .map_err(store_down)?;
    match rotation {
        Rotation::Rotated => Ok(HttpResponse::Ok().json(gw.token_pair(&user, next)?)),
        Rotation::Reused => {
            metrics::counter!("gateway_refresh_reuse_total").increment(1);
            tracing::warn!(
                user_id,
                "a refresh token was used twice; its sign-in is revoked"
            );
            Err(refused(TokenError::Revoked))
        }
        Rotation::Unknown => Err(refused(TokenError::Revoked)),
    }
}

/// End this sign-in: the access token presented and every token of its
/// family stop working at once.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "signed out")))]
pub(super) async fn logout(
    gw: web::Data<Gateway>,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    let claims = &session.claims;
    let family = claims.fam.as_deref().unwrap_or(&claims.jti);
    gw.auth
        .store
        .revoke(family, &claims.jti, remaining(claims.expires_at()))
        .await
        .map_err(store_down)?;
    gw.auth
        .store
        .revoke_family(family, gw.refresh_ttl())
        .await
        .map_err(store_down)?;
    Ok(HttpResponse::NoContent().finish())
}

/// A single-use ticket for a browser, which cannot send `Authorization` on
/// a WebSocket upgrade or an `EventSource`: passed as `?ticket=`, it
/// stands for the access token that asked for it, once, for a few seconds
/// (`GATEWAY_TICKET_TTL`), so no long-lived token ever sits in a URL.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Ticket {
    ticket: String,
    /// Seconds left to redeem it.
    expires_in: u64,
}

/// 256 random bits, URL-safe.
fn new_ticket() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Exchange the access token for a single-use ticket (`?ticket=` on
/// `GET /api/v1/chat/ws`), valid for seconds and never longer than the
/// token itself.
#[utoipa::path(post, path = "/api/v1/auth/ticket", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Ticket, description = "the ticket")))]
pub(super) async fn ticket(
    gw: web::Data<Gateway>,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    let ttl = gw.ticket_ttl.min(remaining(session.claims.expires_at()));
    if ttl < Duration::from_secs(1) {
        return Err(ApiError::Unauthorized(INVALID_TOKEN.into()));
    }
    let ticket = new_ticket();
    gw.auth
        .store
        .put_ticket(&ticket, &session.token, ttl)
        .await
        .map_err(store_down)?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(Ticket {
            ticket,
            expires_in: ttl.as_secs(),
        }))
}
