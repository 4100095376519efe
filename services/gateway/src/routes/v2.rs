//! API version 2, where it differs from v1: listings use opaque cursors
//! (stable under inserts, unlike page numbers) and every body is an
//! envelope, `{data}` or `{data, next_cursor}`.

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use platform_proto::posts::v1 as posts_pb;
use platform_proto::users::v1 as pb;
use platform_proto::users::v1::user_service_client::UserServiceClient;
use serde::{Deserialize, Serialize};

use super::posts::{self, Comment, Post};
use super::users::User;
use crate::Gateway;
use crate::auth::Viewer;
use crate::problem::{ApiError, ProblemBody};
use crate::upstream::{CallContext, RouteClass};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CursorQuery {
    /// Items per page, 1 to 100; 20 when absent.
    #[serde(
        default,
        deserialize_with = "super::in_range::<_, _, 1, { MAX_LIMIT as i64 }>"
    )]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Envelope<T> {
    data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Cursors name what they page through, so one listing's cursor is refused
/// by another.
fn encode_cursor(kind: &str, last_id: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{last_id}"))
}

fn decode_cursor(kind: &str, cursor: &str) -> Result<u64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            text.strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|id| id.parse().ok())
        })
        .ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued")
        })
}

impl CursorQuery {
    /// The page size and the id to continue after.
    fn window(&self, kind: &str) -> Result<(u32, u64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        let after = self
            .cursor
            .as_deref()
            .map(|c| decode_cursor(kind, c))
            .transpose()?
            .unwrap_or(0);
        Ok((limit, after))
    }
}

/// A full page has a next one to ask for (perhaps empty); a short page is
/// the last.
fn page_of<T, U: From<T>>(
    items: Vec<T>,
    limit: u32,
    kind: &str,
    id: impl Fn(&T) -> u64,
) -> Envelope<Vec<U>> {
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|item| encode_cursor(kind, id(item))))
        .flatten();
    Envelope {
        data: items.into_iter().map(U::from).collect(),
        next_cursor,
    }
}

/// A page of users after the cursor, oldest first.
#[utoipa::path(get, operation_id = "v2_list_users", path = "/api/v2/users", tag = "users (v2)", security((), ("bearer" = [])),
    params(CursorQuery),
    responses((status = 200, body = Envelope<Vec<User>>)))]
pub(super) async fn list_users(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    viewer: Viewer,
    query: web::Query<CursorQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = query.window("users")?;
    let message = pb::ListUsersRequest {
        page: 1,
        per_page: i32::try_from(limit).unwrap_or(20),
        after_id: Some(after),
    };
    let list = gw
        .users
        .call(&ctx, RouteClass::Read, message, |ch, req| async move {
            UserServiceClient::new(ch).list_users(req).await
        })
        .await?;
    let page: Envelope<Vec<pb::User>> = page_of(list.users, limit, "users", |u| u.id);
    Ok(HttpResponse::Ok().json(Envelope {
        data: page
            .data
            .into_iter()
            .map(|u| User::seen_by(u, viewer))
            .collect::<Vec<_>>(),
        next_cursor: page.next_cursor,
    }))
}

/// One user, in an envelope.
#[utoipa::path(get, operation_id = "v2_get_user", path = "/api/v2/users/{id}", tag = "users (v2)", security((), ("bearer" = [])), params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Envelope<User>), (status = 404, body = ProblemBody)))]
pub(super) async fn get_user(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    viewer: Viewer,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let user = gw
        .users
        .call(
            &ctx,
            RouteClass::Read,
            pb::GetUserRequest { id: *id },
            |ch, req| async move { UserServiceClient::new(ch).get_user(req).await },
        )
        .await?;
    Ok(HttpResponse::Ok().json(Envelope {
        data: User::seen_by(user, viewer),
        next_cursor: None,
    }))
}

/// A user's posts after the cursor, oldest first.
#[utoipa::path(get, operation_id = "v2_posts_of_user", path = "/api/v2/users/{id}/posts", tag = "posts (v2)",
    params(("id" = i64, Path, minimum = 1), CursorQuery),
    responses((status = 200, body = Envelope<Vec<Post>>), (status = 404, body = ProblemBody)))]
pub(super) async fn posts_of_user(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
    query: web::Query<CursorQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = query.window("posts")?;
    let message = posts_pb::ListPostsByAuthorRequest {
        author_id: *id,
        page: 1,
        per_page: i32::try_from(limit).unwrap_or(20),
        after_id: Some(after),
    };
    let list = posts::list_posts_by_author(&gw, &ctx, message).await?;
    Ok(HttpResponse::Ok().json(page_of::<_, Post>(list.posts, limit, "posts", |p| p.id)))
}

/// Comments on a post after the cursor, oldest first.
#[utoipa::path(get, operation_id = "v2_comments_of_post", path = "/api/v2/posts/{id}/comments", tag = "posts (v2)",
    params(("id" = i64, Path, minimum = 1), CursorQuery),
    responses((status = 200, body = Envelope<Vec<Comment>>), (status = 404, body = ProblemBody)))]
pub(super) async fn comments_of_post(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
    query: web::Query<CursorQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = query.window("comments")?;
    let message = posts_pb::ListCommentsByPostRequest {
        post_id: *id,
        page: 1,
        per_page: i32::try_from(limit).unwrap_or(20),
        after_id: Some(after),
    };
    let list = posts::list_comments_by_post(&gw, &ctx, message).await?;
    Ok(HttpResponse::Ok().json(page_of::<_, Comment>(
        list.comments,
        limit,
        "comments",
        |c| c.id,
    )))
}

/// A user's comments after the cursor, oldest first.
#[utoipa::path(get, operation_id = "v2_comments_of_user", path = "/api/v2/users/{id}/comments", tag = "posts (v2)",
    params(("id" = i64, Path, minimum = 1), CursorQuery),
    responses((status = 200, body = Envelope<Vec<Comment>>), (status = 404, body = ProblemBody)))]
pub(super) async fn comments_of_user(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
    query: web::Query<CursorQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = query.window("comments")?;
    let message = posts_pb::ListCommentsByAuthorRequest {
        author_id: *id,
        page: 1,
        per_page: i32::try_from(limit).unwrap_or(20),
        after_id: Some(after),
    };
    let list = posts::list_comments_by_author(&gw, &ctx, message).await?;
    Ok(HttpResponse::Ok().json(page_of::<_, Comment>(
        list.comments,
        limit,
        "comments",
        |c| c.id,
    )))
}

/// One post, in an envelope.
#[utoipa::path(get, operation_id = "v2_get_post", path = "/api/v2/posts/{id}", tag = "posts (v2)", params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Envelope<Post>), (status = 404, body = ProblemBody)))]
pub(super) async fn get_post(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(Envelope {
        data: Post::from(posts::fetch_post(&gw, &ctx, *id).await?),
        next_cursor: None,
    }))
}

/// One comment, in an envelope.
#[utoipa::path(get, operation_id = "v2_get_comment", path = "/api/v2/comments/{id}", tag = "posts (v2)", params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Envelope<Comment>), (status = 404, body = ProblemBody)))]
pub(super) async fn get_comment(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(Envelope {
        data: Comment::from(posts::fetch_comment(&gw, &ctx, *id).await?),
        next_cursor: None,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let users = super::encode_cursor("users", 42);
        assert_eq!(super::decode_cursor("users", &users).unwrap(), 42);
        assert!(super::decode_cursor("users", "not-a-cursor").is_err());
        assert!(super::decode_cursor("posts", &users).is_err());
        assert!(super::decode_cursor("user", &users).is_err());
    }
}
