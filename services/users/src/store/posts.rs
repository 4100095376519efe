//! Post and comment commands and queries.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::Idempotency;
use super::journal::{next_id, record};
use super::{Store, StoreError, count};
use crate::domain::Slice;
use crate::events::{CommentState, Deleted, DomainEvent, PostState};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Post {
    pub id: i64,
    pub title: String,
    pub content: String,
    pub author_id: i64,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Comment {
    pub id: i64,
    pub content: String,
    pub author_id: i64,
    pub post_id: i64,
    pub version: i64,
    pub created_at: String,
}

const POST_COLUMNS: &str = "id, title, content, author_id, version, created_at, updated_at";
const COMMENT_COLUMNS: &str = "id, content, author_id, post_id, version, created_at";

impl Post {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
            content: row.try_get("content")?,
            author_id: row.try_get("author_id")?,
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl Comment {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            content: row.try_get("content")?,
            author_id: row.try_get("author_id")?,
            post_id: row.try_get("post_id")?,
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

async fn exists(
    tx: &mut Transaction<'static, Any>,
    table: &'static str,
    entity: &'static str,
    id: i64,
) -> Result<(), StoreError> {
    let row = sqlx::query(&format!("SELECT COUNT(*) FROM {table} WHERE id = $1"))
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    if count(&row)? == 0 {
        return Err(StoreError::NotFound { entity, id });
    }
    Ok(())
}

async fn find_post(tx: &mut Transaction<'static, Any>, id: i64) -> Result<Post, StoreError> {
    let row = sqlx::query(&format!("SELECT {POST_COLUMNS} FROM posts WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound { entity: "post", id })?;
    Ok(Post::from_row(&row)?)
}

async fn find_comment(tx: &mut Transaction<'static, Any>, id: i64) -> Result<Comment, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COMMENT_COLUMNS} FROM comments WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound {
        entity: "comment",
        id,
    })?;
    Ok(Comment::from_row(&row)?)
}

impl Store {
    pub async fn create_post(
        &self,
        author_id: i64,
        title: String,
        content: String,
        traceparent: Option<&str>,
    ) -> Result<Post, StoreError> {
        self.create_post_once(author_id, title, content, traceparent, None)
            .await
    }

    /// As [`Store::create_post`], recording the answer for `idempotency`
    /// in the same transaction.
    pub async fn create_post_once(
        &self,
        author_id: i64,
        title: String,
        content: String,
        traceparent: Option<&str>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Post, StoreError> {
        let mut tx = self.pool.begin().await?;
        exists(&mut tx, "users", "user", author_id).await?;
        let id = next_id(&mut tx, "post").await?;
        let event = DomainEvent::PostCreated(PostState {
            id,
            title,
            content,
            author_id,
        });
        record(&mut tx, &event, 1, traceparent).await?;
        let post = find_post(&mut tx, id).await?;
        if let Some(idempotency) = idempotency {
            super::idempotency::remember(&mut tx, idempotency, &post).await?;
        }
        self.commit(tx).await?;
        Ok(post)
    }

    pub async fn update_post(
        &self,
        id: i64,
        title: Option<String>,
        content: Option<String>,
        traceparent: Option<&str>,
    ) -> Result<Post, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current = find_post(&mut tx, id).await?;
        let event = DomainEvent::PostUpdated(PostState {
            id,
            title: title.unwrap_or(current.title),
            content: content.unwrap_or(current.content),
            author_id: current.author_id,
        });
        record(&mut tx, &event, current.version + 1, traceparent).await?;
        let post = find_post(&mut tx, id).await?;
        self.commit(tx).await?;
        Ok(post)
    }

    pub async fn delete_post(&self, id: i64, traceparent: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let current = find_post(&mut tx, id).await?;
        record(
            &mut tx,
            &DomainEvent::PostDeleted(Deleted { id }),
            current.version + 1,
            traceparent,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn get_post(&self, id: i64) -> Result<Post, StoreError> {
        let row = sqlx::query(&format!("SELECT {POST_COLUMNS} FROM posts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { entity: "post", id })?;
        Ok(Post::from_row(&row)?)
    }

    pub async fn posts_by_author(
        &self,
        author_id: i64,
        slice: Slice,
    ) -> Result<(Vec<Post>, i64), StoreError> {
        let rows = match slice {
            Slice::Page(page) => {
                sqlx::query(&format!(
                    "SELECT {POST_COLUMNS} FROM posts WHERE author_id = $1 ORDER BY id LIMIT $2 OFFSET $3"
                ))
                .bind(author_id)
                .bind(page.limit())
                .bind(page.offset())
                .fetch_all(&self.pool)
                .await?
            }
            Slice::After { id, limit } => {
                sqlx::query(&format!(
                    "SELECT {POST_COLUMNS} FROM posts WHERE author_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                ))
                .bind(author_id)
                .bind(id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        let total = count(
            &sqlx::query("SELECT COUNT(*) FROM posts WHERE author_id = $1")
                .bind(author_id)
                .fetch_one(&self.pool)
                .await?,
        )?;
        Ok((
            rows.iter().map(Post::from_row).collect::<Result<_, _>>()?,
            total,
        ))
    }

    pub async fn create_comment(
        &self,
        post_id: i64,
        author_id: i64,
        content: String,
        traceparent: Option<&str>,
    ) -> Result<Comment, StoreError> {
        self.create_comment_once(post_id, author_id, content, traceparent, None)
            .await
    }

    /// As [`Store::create_comment`], recording the answer for
    /// `idempotency` in the same transaction.
    pub async fn create_comment_once(
        &self,
        post_id: i64,
        author_id: i64,
        content: String,
        traceparent: Option<&str>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Comment, StoreError> {
        let mut tx = self.pool.begin().await?;
        exists(&mut tx, "posts", "post", post_id).await?;
        exists(&mut tx, "users", "user", author_id).await?;
        let id = next_id(&mut tx, "comment").await?;
        let event = DomainEvent::CommentAdded(CommentState {
            id,
            post_id,
            author_id,
            content,
        });
        record(&mut tx, &event, 1, traceparent).await?;
        let comment = find_comment(&mut tx, id).await?;
        if let Some(idempotency) = idempotency {
            super::idempotency::remember(&mut tx, idempotency, &comment).await?;
        }
        self.commit(tx).await?;
        Ok(comment)
    }

    pub async fn update_comment(
        &self,
        id: i64,
        content: String,
        traceparent: Option<&str>,
    ) -> Result<Comment, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current = find_comment(&mut tx, id).await?;
        let event = DomainEvent::CommentUpdated(CommentState {
            id,
            post_id: current.post_id,
            author_id: current.author_id,
            content,
        });
        record(&mut tx, &event, current.version + 1, traceparent).await?;
        let comment = find_comment(&mut tx, id).await?;
        self.commit(tx).await?;
        Ok(comment)
    }

    pub async fn delete_comment(
        &self,
        id: i64,
        traceparent: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let current = find_comment(&mut tx, id).await?;
        record(
            &mut tx,
            &DomainEvent::CommentDeleted(Deleted { id }),
            current.version + 1,
            traceparent,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn get_comment(&self, id: i64) -> Result<Comment, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COMMENT_COLUMNS} FROM comments WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound {
            entity: "comment",
            id,
        })?;
        Ok(Comment::from_row(&row)?)
    }

    /// Comments where `column` (post_id or author_id) is `id`, oldest first:
    /// a numbered page, or the first `limit` after an id (keyset).
    async fn comments_where(
        &self,
        column: &'static str,
        id: i64,
        slice: Slice,
    ) -> Result<(Vec<Comment>, i64), StoreError> {
        let rows = match slice {
            Slice::Page(page) => {
                sqlx::query(&format!(
                    "SELECT {COMMENT_COLUMNS} FROM comments WHERE {column} = $1 ORDER BY id LIMIT $2 OFFSET $3"
                ))
                .bind(id)
                .bind(page.limit())
                .bind(page.offset())
                .fetch_all(&self.pool)
                .await?
            }
            Slice::After { id: after, limit } => {
                sqlx::query(&format!(
                    "SELECT {COMMENT_COLUMNS} FROM comments WHERE {column} = $1 AND id > $2 ORDER BY id LIMIT $3"
                ))
                .bind(id)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        let total = count(
            &sqlx::query(&format!(
                "SELECT COUNT(*) FROM comments WHERE {column} = $1"
            ))
            .bind(id)
            .fetch_one(&self.pool)
            .await?,
        )?;
        Ok((
            rows.iter()
                .map(Comment::from_row)
                .collect::<Result<_, _>>()?,
            total,
        ))
    }

    pub async fn comments_by_post(
        &self,
        post_id: i64,
        slice: Slice,
    ) -> Result<(Vec<Comment>, i64), StoreError> {
        self.comments_where("post_id", post_id, slice).await
    }

    pub async fn comments_by_author(
        &self,
        author_id: i64,
        slice: Slice,
    ) -> Result<(Vec<Comment>, i64), StoreError> {
        self.comments_where("author_id", author_id, slice).await
    }
}
