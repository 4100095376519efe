//! `posts.v1.PostService` and `posts.v1.CommentService`.

use platform_proto::posts::v1 as pb;
use platform_proto::posts::v1::comment_service_server::CommentService;
use platform_proto::posts::v1::post_service_server::PostService;
use tonic::{Request, Response, Status};

use super::{invalid, store_status, total, traceparent, unsigned};
use crate::domain::{Slice, parse_comment_content, parse_id, parse_post_content, parse_title};
use crate::store::{Comment, Post, Store};
use crate::views::Views;

#[derive(Clone)]
pub struct PostApi {
    store: Store,
    views: Views,
}

impl PostApi {
    pub fn new(store: Store, views: Views) -> Self {
        Self { store, views }
    }
}

#[derive(Clone)]
pub struct CommentApi {
    store: Store,
}

impl CommentApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

pub(crate) fn post_to_proto(post: Post) -> pb::Post {
    pb::Post {
        id: unsigned(post.id),
        title: post.title,
        content: post.content,
        author_id: unsigned(post.author_id),
        created_at: post.created_at,
        updated_at: post.updated_at,
        version: unsigned(post.version),
    }
}

fn comment_to_proto(comment: Comment) -> pb::Comment {
    pb::Comment {
        id: unsigned(comment.id),
        content: comment.content,
        author_id: unsigned(comment.author_id),
        post_id: unsigned(comment.post_id),
        created_at: comment.created_at,
        version: unsigned(comment.version),
    }
}

#[tonic::async_trait]
impl PostService for PostApi {
    async fn get_post(
        &self,
        request: Request<pb::GetPostRequest>,
    ) -> Result<Response<pb::Post>, Status> {
        let id = parse_id("id", request.into_inner().id).map_err(invalid)?;
        let post = self.views.post(id).await.map_err(store_status)?;
        Ok(Response::new(post_to_proto(post)))
    }

    async fn create_post(
        &self,
        request: Request<pb::CreatePostRequest>,
    ) -> Result<Response<pb::Post>, Status> {
        let encoded = prost::Message::encode_to_vec(request.get_ref());
        let idempotency = super::idempotency(&request, "CreatePost", &encoded)?;
        let req = request.into_inner();
        let author = parse_id("author_id", req.author_id).map_err(invalid)?;
        let title = parse_title(&req.title).map_err(invalid)?;
        let content = parse_post_content(&req.content).map_err(invalid)?;
        let trace = traceparent();
        let post = super::once(&self.store, idempotency, async |key| {
            self.store
                .create_post_once(author, title, content, trace.as_deref(), key)
                .await
        })
        .await?;
        Ok(Response::new(post_to_proto(post)))
    }

    async fn update_post(
        &self,
        request: Request<pb::UpdatePostRequest>,
    ) -> Result<Response<pb::Post>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", req.id).map_err(invalid)?;
        if let Some(actor) = req.actor_id {
            let post = self.store.get_post(id).await.map_err(store_status)?;
            authored_by(post.author_id, actor)?;
        }
        let title = req
            .title
            .as_deref()
            .map(parse_title)
            .transpose()
            .map_err(invalid)?;
        let content = req
            .content
            .as_deref()
            .map(parse_post_content)
            .transpose()
            .map_err(invalid)?;
        let post = self
            .store
            .update_post(id, title, content, traceparent().as_deref())
            .await
            .map_err(store_status)?;
        self.views.invalidate_post(id).await;
        Ok(Response::new(post_to_proto(post)))
    }

    async fn delete_post(
        &self,
        request: Request<pb::DeletePostRequest>,
    ) -> Result<Response<pb::DeletePostResponse>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", req.id).map_err(invalid)?;
        if let Some(actor) = req.actor_id {
            let post = self.store.get_post(id).await.map_err(store_status)?;
            authored_by(post.author_id, actor)?;
        }
        self.store
            .delete_post(id, traceparent().as_deref())
            .await
            .map_err(store_status)?;
        self.views.invalidate_post(id).await;
        Ok(Response::new(pb::DeletePostResponse { success: true }))
    }

    async fn list_posts_by_author(
        &self,
        request: Request<pb::ListPostsByAuthorRequest>,
    ) -> Result<Response<pb::ListPostsResponse>, Status> {
        let req = request.into_inner();
        let author = parse_id("author_id", req.author_id).map_err(invalid)?;
        let slice = Slice::parse(req.page, req.per_page, req.after_id).map_err(invalid)?;
        let (posts, count) = self
            .store
            .posts_by_author(author, slice)
            .await
            .map_err(store_status)?;
        if count == 0 {
            // Nobody's posts are a 404, not an empty page.
            self.store.get_user(author).await.map_err(store_status)?;
        }
        Ok(Response::new(pb::ListPostsResponse {
            posts: posts.into_iter().map(post_to_proto).collect(),
            total: total(count),
        }))
    }
}

/// Whether `actor` wrote what the store says `author` wrote. Read from the
/// store, not the views: a cache level is shared with other processes
/// (Redis), and what one of them writes there must not grant a change.
/// The author never changes, so checking before the write is race-free.
fn authored_by(author: i64, actor: u64) -> Result<(), Status> {
    if unsigned(author) == actor {
        Ok(())
    } else {
        Err(Status::permission_denied("only the author may change it"))
    }
}

#[tonic::async_trait]
impl CommentService for CommentApi {
    async fn get_comment(
        &self,
        request: Request<pb::GetCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        let id = parse_id("id", request.into_inner().id).map_err(invalid)?;
        let comment = self.store.get_comment(id).await.map_err(store_status)?;
        Ok(Response::new(comment_to_proto(comment)))
    }

    async fn create_comment(
        &self,
        request: Request<pb::CreateCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        let encoded = prost::Message::encode_to_vec(request.get_ref());
        let idempotency = super::idempotency(&request, "CreateComment", &encoded)?;
        let req = request.into_inner();
        let post = parse_id("post_id", req.post_id).map_err(invalid)?;
        let author = parse_id("author_id", req.author_id).map_err(invalid)?;
        let content = parse_comment_content(&req.content).map_err(invalid)?;
        let trace = traceparent();
        let comment = super::once(&self.store, idempotency, async |key| {
            self.store
                .create_comment_once(post, author, content, trace.as_deref(), key)
                .await
        })
        .await?;
        Ok(Response::new(comment_to_proto(comment)))
    }

    async fn update_comment(
        &self,
        request: Request<pb::UpdateCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", req.id).map_err(invalid)?;
        let content = parse_comment_content(&req.content).map_err(invalid)?;
        if let Some(actor) = req.actor_id {
            let comment = self.store.get_comment(id).await.map_err(store_status)?;
            authored_by(comment.author_id, actor)?;
        }
        let comment = self
            .store
            .update_comment(id, content, traceparent().as_deref())
            .await
            .map_err(store_status)?;
        Ok(Response::new(comment_to_proto(comment)))
    }

    async fn delete_comment(
        &self,
        request: Request<pb::DeleteCommentRequest>,
    ) -> Result<Response<pb::DeleteCommentResponse>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", req.id).map_err(invalid)?;
        if let Some(actor) = req.actor_id {
            let comment = self.store.get_comment(id).await.map_err(store_status)?;
            authored_by(comment.author_id, actor)?;
        }
        self.store
            .delete_comment(id, traceparent().as_deref())
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::DeleteCommentResponse { success: true }))
    }

    async fn list_comments_by_post(
        &self,
        request: Request<pb::ListCommentsByPostRequest>,
    ) -> Result<Response<pb::ListCommentsResponse>, Status> {
        let req = request.into_inner();
        let post = parse_id("post_id", req.post_id).map_err(invalid)?;
        let slice = Slice::parse(req.page, req.per_page, req.after_id).map_err(invalid)?;
        let (comments, count) = self
            .store
            .comments_by_post(post, slice)
            .await
            .map_err(store_status)?;
        if count == 0 {
            // A deleted or unknown post's comments are a 404, not an empty page.
            self.store.get_post(post).await.map_err(store_status)?;
        }
        Ok(Response::new(pb::ListCommentsResponse {
            comments: comments.into_iter().map(comment_to_proto).collect(),
            total: total(count),
        }))
    }

    async fn list_comments_by_author(
        &self,
        request: Request<pb::ListCommentsByAuthorRequest>,
    ) -> Result<Response<pb::ListCommentsResponse>, Status> {
        let req = request.into_inner();
        let author = parse_id("author_id", req.author_id).map_err(invalid)?;
        let slice = Slice::parse(req.page, req.per_page, req.after_id).map_err(invalid)?;
        let (comments, count) = self
            .store
            .comments_by_author(author, slice)
            .await
            .map_err(store_status)?;
        if count == 0 {
            self.store.get_user(author).await.map_err(store_status)?;
        }
        Ok(Response::new(pb::ListCommentsResponse {
            comments: comments.into_iter().map(comment_to_proto).collect(),
            total: total(count),
        }))
    }
}
