//! Users and sign-in, translated to the users service's gRPC API.

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web};
use common::json::JsonObject;
use platform_proto::users::v1 as pb;
use platform_proto::users::v1::user_service_client::UserServiceClient;
use serde::{Deserialize, Serialize};

use super::{Paging, not_allowed};
use crate::Gateway;
use crate::auth::{AuthUser, Viewer};
use crate::problem::{ApiError, ProblemBody};
use crate::ratelimit::limit_rate;
use crate::request::IdempotencyHeader;
use crate::request::request_id;
use crate::upstream::{CallContext, RouteClass};
use crate::versioning::deprecate_v1;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .wrap(from_fn(deprecate_v1))
            .wrap(from_fn(limit_rate))
            .wrap(from_fn(request_id))
            .wrap(from_fn(crate::cors::cors))
            .route("/users", web::post().to(sign_up))
            .route("/users", web::get().to(list))
            .route("/users", not_allowed("GET, POST"))
            .route("/users/{id}", web::get().to(get))
            .route("/users/{id}", web::patch().to(update))
            .route("/users/{id}", web::delete().to(delete))
            .route("/users/{id}", not_allowed("GET, PATCH, DELETE"))
            .route("/auth/login", web::post().to(super::auth::login))
            .route("/auth/login", not_allowed("POST"))
            .route("/auth/refresh", web::post().to(super::auth::refresh))
            .route("/auth/refresh", not_allowed("POST"))
            .route("/auth/logout", web::post().to(super::auth::logout))
            .route("/auth/logout", not_allowed("POST"))
            .route("/auth/ticket", web::post().to(super::auth::ticket))
            .route("/auth/ticket", not_allowed("POST"))
            .configure(super::posts::configure)
            .configure(super::search::configure),
    );
}

/// A user as others see them; `email` is private: it is the owner's alone
/// and `null` for everyone else.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct User {
    id: u64,
    username: String,
    /// Only in answers to the account's owner; `null` otherwise.
    #[schema(required = true)]
    email: Option<String>,
    created_at: String,
    updated_at: String,
    version: u64,
}

impl User {
    /// `u` as `viewer` may see it.
    pub(super) fn seen_by(u: pb::User, viewer: Viewer) -> Self {
        Self {
            email: viewer.is(u.id).then_some(u.email),
            id: u.id,
            username: u.username,
            created_at: u.created_at,
            updated_at: u.updated_at,
            version: u.version,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SignUp {
    #[schema(
        min_length = 3,
        max_length = 32,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )]
    username: String,
    #[schema(format = Email, min_length = 3, max_length = 254)]
    email: String,
    /// Not only white space.
    #[schema(min_length = 8, max_length = 128, pattern = r"[^\s\u0085]")]
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Changes {
    #[schema(
        min_length = 3,
        max_length = 32,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )]
    username: Option<String>,
    #[schema(format = Email, min_length = 3, max_length = 254)]
    email: Option<String>,
    /// The version the change was made against: `409 version_conflict`
    /// when the account changed since.
    #[schema(value_type = Option<u64>, minimum = 1)]
    expected_version: Option<common::json::Whole>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct UserList {
    users: Vec<User>,
    total: i32,
    page: i32,
    per_page: i32,
}

/// Sign up. With an `Idempotency-Key`, a retry gets the first answer and
/// makes no second account.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = SignUp,
    params(super::IdempotencyKeyParam),
    responses((status = 201, body = User), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub(super) async fn sign_up(
    req: actix_web::HttpRequest,
    gw: web::Data<Gateway>,
    ctx: CallContext,
    key: IdempotencyHeader,
    body: JsonObject<SignUp>,
) -> Result<HttpResponse, ApiError> {
    // Anonymous: the key is the client address's.
    let scope = crate::client_addr::client_ip(&req)
        .map_or_else(|| "ip:unknown".to_owned(), crate::client_addr::limit_key);
    let ctx = ctx.with_idempotency(key, scope);
    let body = body.into_inner();
    crate::ratelimit::limit_attempts(&req, "signup", &body.email, gw.limits.signup).await?;
    let message = pb::CreateUserRequest {
        username: body.username,
        email: body.email,
        password: body.password,
    };
    let user = gw
        .users
        .call(&ctx, RouteClass::Write, message, |ch, req| async move {
            UserServiceClient::new(ch).create_user(req).await
        })
        .await?;
    // The answer goes to whoever just made the account: its owner.
    let owner = Viewer(Some(user.id));
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/users/{}", user.id)))
        .json(User::seen_by(user, owner)))
}

/// One user.
#[utoipa::path(get, operation_id = "get_user", path = "/api/v1/users/{id}", tag = "users", security((), ("bearer" = [])), params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = User), (status = 404, body = ProblemBody)))]
pub(super) async fn get(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    viewer: Viewer,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::GetUserRequest { id: *id };
    let user = gw
        .users
        .call(&ctx, RouteClass::Read, message, |ch, req| async move {
            UserServiceClient::new(ch).get_user(req).await
        })
        .await?;
    Ok(HttpResponse::Ok().json(User::seen_by(user, viewer)))
}

/// A page of users; `per_page` is at most 100.
#[utoipa::path(get, operation_id = "list_users", path = "/api/v1/users", tag = "users", security((), ("bearer" = [])),
    params(Paging),
    responses((status = 200, body = UserList)))]
pub(super) async fn list(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    viewer: Viewer,
    query: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ListUsersRequest {
        page: query.page(),
        per_page: query.per_page(),
        after_id: None,
    };
    let page = message.page;
    let list = gw
        .users
        .call(&ctx, RouteClass::Read, message, |ch, req| async move {
            UserServiceClient::new(ch).list_users(req).await
        })
        .await?;
    Ok(HttpResponse::Ok().json(UserList {
        per_page: query.per_page(),
        page,
        total: list.total,
        users: list
            .users
            .into_iter()
            .map(|u| User::seen_by(u, viewer))
            .collect(),
    }))
}

pub(super) fn owner_only(auth: AuthUser, id: u64) -> Result<(), ApiError> {
    if auth.0 == id {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only the account's owner may change it".into(),
        ))
    }
}

/// Update your own account.
#[utoipa::path(patch, operation_id = "update_user", path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path, minimum = 1)), request_body = Changes,
    security(("bearer" = [])),
    responses((status = 200, body = User), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
pub(super) async fn update(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    auth: AuthUser,
    id: web::Path<u64>,
    body: JsonObject<Changes>,
) -> Result<HttpResponse, ApiError> {
    owner_only(auth, *id)?;
    let body = body.into_inner();
    let message = pb::UpdateUserRequest {
        id: *id,
        username: body.username,
        email: body.email,
        expected_version: body.expected_version.map(|v| v.0),
    };
    let user = gw
        .users
        .call(&ctx, RouteClass::Write, message, |ch, req| async move {
            UserServiceClient::new(ch).update_user(req).await
        })
        .await?;
    Ok(HttpResponse::Ok().json(User::seen_by(user, Viewer(Some(auth.0)))))
}

/// Delete your own account.
#[utoipa::path(delete, operation_id = "delete_user", path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path, minimum = 1)),
    security(("bearer" = [])),
    responses((status = 204), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody)))]
pub(super) async fn delete(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    auth: AuthUser,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    owner_only(auth, *id)?;
    let message = pb::DeleteUserRequest {
        id: *id,
        expected_version: None,
    };
    gw.users
        .call(&ctx, RouteClass::Write, message, |ch, req| async move {
            UserServiceClient::new(ch).delete_user(req).await
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
