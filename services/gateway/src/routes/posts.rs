//! Posts and comments, translated to the users service's gRPC API. Only
//! the author may change or delete a post or a comment.

use actix_web::{HttpResponse, web};
use common::json::JsonObject;
use platform_proto::posts::v1 as pb;
use platform_proto::posts::v1::comment_service_client::CommentServiceClient;
use platform_proto::posts::v1::post_service_client::PostServiceClient;
use serde::{Deserialize, Serialize};

use super::Paging;
use crate::Gateway;
use crate::auth::AuthUser;
use crate::problem::{ApiError, ProblemBody};
use crate::request::IdempotencyHeader;
use crate::upstream::{CallContext, RouteClass};

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::not_allowed;
    cfg.route("/posts", web::post().to(create_post))
        .route("/posts", not_allowed("POST"))
        .route("/posts/{id}", web::get().to(get_post))
        .route("/posts/{id}", web::patch().to(update_post))
        .route("/posts/{id}", web::delete().to(delete_post))
        .route("/posts/{id}", not_allowed("GET, PATCH, DELETE"))
        .route("/posts/{id}/comments", web::post().to(create_comment))
        .route("/posts/{id}/comments", web::get().to(comments_of_post))
        .route("/posts/{id}/comments", not_allowed("GET, POST"))
        .route("/users/{id}/posts", web::get().to(posts_of_user))
        .route("/users/{id}/posts", not_allowed("GET"))
        .route("/users/{id}/comments", web::get().to(comments_of_user))
        .route("/users/{id}/comments", not_allowed("GET"))
        .route("/comments/{id}", web::get().to(get_comment))
        .route("/comments/{id}", web::patch().to(update_comment))
        .route("/comments/{id}", web::delete().to(delete_comment))
        .route("/comments/{id}", not_allowed("GET, PATCH, DELETE"));
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Post {
    id: u64,
    title: String,
    content: String,
    author_id: u64,
    created_at: String,
    updated_at: String,
    version: u64,
}

impl From<pb::Post> for Post {
    fn from(p: pb::Post) -> Self {
        Self {
            id: p.id,
            title: p.title,
            content: p.content,
            author_id: p.author_id,
            created_at: p.created_at,
            updated_at: p.updated_at,
            version: p.version,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Comment {
    id: u64,
    content: String,
    author_id: u64,
    post_id: u64,
    created_at: String,
    version: u64,
}

impl From<pb::Comment> for Comment {
    fn from(c: pb::Comment) -> Self {
        Self {
            id: c.id,
            content: c.content,
            author_id: c.author_id,
            post_id: c.post_id,
            created_at: c.created_at,
            version: c.version,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Page<T> {
    items: Vec<T>,
    total: i32,
    page: i32,
    per_page: i32,
}

impl<T> Page<T> {
    /// One page of `items` as the users service returned it for `query`.
    fn of<U: Into<T>>(items: Vec<U>, total: i32, query: &Paging) -> Self {
        Self {
            items: items.into_iter().map(Into::into).collect(),
            total,
            page: query.page(),
            per_page: query.per_page(),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewPost {
    /// Trimmed; not only white space.
    #[schema(max_length = 200, pattern = r"[^\s\u0085]")]
    title: String,
    #[schema(max_length = 20000, pattern = r"[^\s\u0085]")]
    content: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PostChanges {
    #[schema(max_length = 200, pattern = r"[^\s\u0085]")]
    title: Option<String>,
    #[schema(max_length = 20000, pattern = r"[^\s\u0085]")]
    content: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CommentBody {
    #[schema(max_length = 5000, pattern = r"[^\s\u0085]")]
    content: String,
}

pub(super) async fn fetch_post(
    gw: &Gateway,
    ctx: &CallContext,
    id: u64,
) -> Result<pb::Post, ApiError> {
    gw.users
        .call(
            ctx,
            RouteClass::Read,
            pb::GetPostRequest { id },
            |ch, req| async move { PostServiceClient::new(ch).get_post(req).await },
        )
        .await
}

pub(super) async fn fetch_comment(
    gw: &Gateway,
    ctx: &CallContext,
    id: u64,
) -> Result<pb::Comment, ApiError> {
    gw.users
        .call(
            ctx,
            RouteClass::Read,
            pb::GetCommentRequest { id },
            |ch, req| async move { CommentServiceClient::new(ch).get_comment(req).await },
        )
        .await
}

// The listings' calls, shared by v1 (numbered pages) and v2 (cursors).

pub(super) async fn list_posts_by_author(
    gw: &Gateway,
    ctx: &CallContext,
    message: pb::ListPostsByAuthorRequest,
) -> Result<pb::ListPostsResponse, ApiError> {
    gw.users
        .call(ctx, RouteClass::Read, message, |ch, req| async move {
            PostServiceClient::new(ch).list_posts_by_author(req).await
        })
        .await
}

pub(super) async fn list_comments_by_post(
    gw: &Gateway,
    ctx: &CallContext,
    message: pb::ListCommentsByPostRequest,
) -> Result<pb::ListCommentsResponse, ApiError> {
    gw.users
        .call(ctx, RouteClass::Read, message, |ch, req| async move {
            CommentServiceClient::new(ch)
                .list_comments_by_post(req)
                .await
        })
        .await
}

pub(super) async fn list_comments_by_author(
    gw: &Gateway,
    ctx: &CallContext,
    message: pb::ListCommentsByAuthorRequest,
) -> Result<pb::ListCommentsResponse, ApiError> {
    gw.users
        .call(ctx, RouteClass::Read, message, |ch, req| async move {
            CommentServiceClient::new(ch)
                .list_comments_by_author(req)
                .await
        })
        .await
}

#[utoipa::path(post, path = "/api/v1/posts", tag = "posts", request_body = NewPost, security(("bearer" = [])),
    params(super::IdempotencyKeyParam),
    responses((status = 201, body = Post), (status = 422, body = ProblemBody)))]
pub(super) async fn create_post(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    auth: AuthUser,
    key: IdempotencyHeader,
    body: JsonObject<NewPost>,
) -> Result<HttpResponse, ApiError> {
    let ctx = ctx.with_idempotency(key, format!("user:{}", auth.0));
    let body = body.into_inner();
    let message = pb::CreatePostRequest {
        title: body.title,
        content: body.content,
        author_id: auth.0,
    };
    let post = gw
        .users
        .call(&ctx, RouteClass::Write, message, |ch, req| async move {
            PostServiceClient::new(ch).create_post(req).await
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/posts/{}", post.id)))
        .json(Post::from(post)))
}

#[utoipa::path(get, path = "/api/v1/posts/{id}", tag = "posts", params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Post), (status = 404, body = ProblemBody)))]
pub(super) async fn get_post(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(Post::from(fetch_post(&gw, &ctx, *id).await?)))
}

#[utoipa::path(patch, path = "/api/v1/posts/{id}", tag = "posts", params(("id" = i64, Path, minimum = 1)), request_body = PostChanges, security(("bearer" = [])),
    responses((status = 200, body = Post), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn update_post(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    auth: AuthUser,
    id: web::Path<u64>,
    body: JsonObject<PostChanges>,
) -> Result<HttpResponse, ApiError> {
    // The users service checks authorship against its store (never a
    // cache another process can write): 403 when `auth` is not the author.
    let body = body.into_inner();
    let message = pb::UpdatePostRequest {
        id: *id,
        title: body.title,
        content: body.content,
        actor_id: Some(auth.0),
    };
    let post = gw
        .users
        .call(&ctx, RouteClass::Write, message, |ch, req| async move {
            PostServiceClient::new(ch).update_post(req).await
        })
        .await?;
    Ok(HttpResponse::Ok().json(Post::from(post)))
}

#[utoipa::path(delete, path = "/api/v1/posts/{id}", tag = "posts", params(("id" = i64, Path, minimum = 1)), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn delete_post(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    auth: AuthUser,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    gw.users
        .call(
            &ctx,
            RouteClass::Write,
            pb::DeletePostRequest {
                id: *id,
                actor_id: Some(auth.0),
            },
            |ch, req| async move { PostServiceClient::new(ch).delete_post(req).await },
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/users/{id}/posts", tag = "posts", params(("id" = i64, Path, minimum = 1), Paging),
    responses((status = 200, body = Page<Post>), (status = 404, body = ProblemBody)))]
pub(super) async fn posts_of_user(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
    query: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ListPostsByAuthorRequest {
        author_id: *id,
        page: query.page(),
        per_page: query.per_page(),
        after_id: None,
    };
    let list = list_posts_by_author(&gw, &ctx, message).await?;
    Ok(HttpResponse::Ok().json(Page::<Post>::of(list.posts, list.total, &query)))
}

#[utoipa::path(post, path = "/api/v1/posts/{id}/comments", tag = "comments", params(("id" = i64, Path, minimum = 1), super::IdempotencyKeyParam), request_body = CommentBody, security(("bearer" = [])),
    responses((status = 201, body = Comment), (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub(super) async fn create_comment(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    auth: AuthUser,
    key: IdempotencyHeader,
    id: web::Path<u64>,
    body: JsonObject<CommentBody>,
) -> Result<HttpResponse, ApiError> {
    let ctx = ctx.with_idempotency(key, format!("user:{}", auth.0));
    let message = pb::CreateCommentRequest {
        content: body.into_inner().content,
        author_id: auth.0,
        post_id: *id,
    };
    let comment = gw
        .users
        .call(&ctx, RouteClass::Write, message, |ch, req| async move {
            CommentServiceClient::new(ch).create_comment(req).await
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/comments/{}", comment.id)))
        .json(Comment::from(comment)))
}

#[utoipa::path(get, path = "/api/v1/posts/{id}/comments", tag = "comments", params(("id" = i64, Path, minimum = 1), Paging),
    responses((status = 200, body = Page<Comment>), (status = 404, body = ProblemBody)))]
pub(super) async fn comments_of_post(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
    query: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ListCommentsByPostRequest {
        post_id: *id,
        page: query.page(),
        per_page: query.per_page(),
        after_id: None,
    };
    let list = list_comments_by_post(&gw, &ctx, message).await?;
    Ok(HttpResponse::Ok().json(Page::<Comment>::of(list.comments, list.total, &query)))
}

#[utoipa::path(get, path = "/api/v1/users/{id}/comments", tag = "comments", params(("id" = i64, Path, minimum = 1), Paging),
    responses((status = 200, body = Page<Comment>), (status = 404, body = ProblemBody)))]
pub(super) async fn comments_of_user(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
    query: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ListCommentsByAuthorRequest {
        author_id: *id,
        page: query.page(),
        per_page: query.per_page(),
        after_id: None,
    };
    let list = list_comments_by_author(&gw, &ctx, message).await?;
    Ok(HttpResponse::Ok().json(Page::<Comment>::of(list.comments, list.total, &query)))
}

#[utoipa::path(get, path = "/api/v1/comments/{id}", tag = "comments", params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Comment), (status = 404, body = ProblemBody)))]
pub(super) async fn get_comment(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(Comment::from(fetch_comment(&gw, &ctx, *id).await?)))
}

#[utoipa::path(patch, path = "/api/v1/comments/{id}", tag = "comments", params(("id" = i64, Path, minimum = 1)), request_body = CommentBody, security(("bearer" = [])),
    responses((status = 200, body = Comment), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn update_comment(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    auth: AuthUser,
    id: web::Path<u64>,
    body: JsonObject<CommentBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::UpdateCommentRequest {
        id: *id,
        content: body.into_inner().content,
        actor_id: Some(auth.0),
    };
    let comment = gw
        .users
        .call(&ctx, RouteClass::Write, message, |ch, req| async move {
            CommentServiceClient::new(ch).update_comment(req).await
        })
        .await?;
    Ok(HttpResponse::Ok().json(Comment::from(comment)))
}

#[utoipa::path(delete, path = "/api/v1/comments/{id}", tag = "comments", params(("id" = i64, Path, minimum = 1)), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn delete_comment(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    auth: AuthUser,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    gw.users
        .call(
            &ctx,
            RouteClass::Write,
            pb::DeleteCommentRequest {
                id: *id,
                actor_id: Some(auth.0),
            },
            |ch, req| async move { CommentServiceClient::new(ch).delete_comment(req).await },
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
