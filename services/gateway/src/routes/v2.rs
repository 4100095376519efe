//! API version 2, where it differs from v1: listings use opaque cursors
//! (stable under inserts, unlike page numbers) and every body is an
//! envelope, `{data}` or `{data, next_cursor}`.

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use platform_proto::users::v1 as pb;
use platform_proto::users::v1::user_service_client::UserServiceClient;
use serde::{Deserialize, Serialize};

use super::users::User;
use crate::Gateway;
use crate::problem::{ApiError, Problem};
use crate::upstream::CallContext;

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CursorQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Envelope<T> {
    data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn encode_cursor(last_id: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("users:{last_id}"))
}

fn decode_cursor(cursor: &str) -> Result<u64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("users:").and_then(|id| id.parse().ok()))
        .ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued")
        })
}

/// A page of users after the cursor, oldest first.
#[utoipa::path(get, path = "/api/v2/users", tag = "users (v2)",
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Envelope<Vec<User>>), (status = 400, body = Problem)))]
pub(super) async fn list_users(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    query: web::Query<CursorQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let after = query
        .cursor
        .as_deref()
        .map(decode_cursor)
        .transpose()?
        .unwrap_or(0);
    let message = pb::ListUsersRequest {
        page: 1,
        per_page: i32::try_from(limit).unwrap_or(20),
        after_id: Some(after),
    };
    let list = gw
        .users
        .call(&ctx, true, message, |ch, req| async move {
            UserServiceClient::new(ch).list_users(req).await
        })
        .await?;
    let next_cursor = (list.users.len() == limit as usize)
        .then(|| list.users.last().map(|u| encode_cursor(u.id)))
        .flatten();
    Ok(HttpResponse::Ok().json(Envelope {
        data: list.users.into_iter().map(User::from).collect::<Vec<_>>(),
        next_cursor,
    }))
}

/// One user, in an envelope.
#[utoipa::path(get, path = "/api/v2/users/{id}", tag = "users (v2)", params(("id" = u64, Path)),
    responses((status = 200, body = Envelope<User>), (status = 404, body = Problem)))]
pub(super) async fn get_user(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let user = gw
        .users
        .call(
            &ctx,
            true,
            pb::GetUserRequest { id: *id },
            |ch, req| async move { UserServiceClient::new(ch).get_user(req).await },
        )
        .await?;
    Ok(HttpResponse::Ok().json(Envelope {
        data: User::from(user),
        next_cursor: None,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(super::decode_cursor(&super::encode_cursor(42)).unwrap(), 42);
        assert!(super::decode_cursor("not-a-cursor").is_err());
        assert!(
            super::decode_cursor(&base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                "posts:1"
            ))
            .is_err()
        );
    }
}
