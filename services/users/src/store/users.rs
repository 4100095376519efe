//! User commands and queries.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::Idempotency;
use super::journal::{next_id, record};
use super::{Store, StoreError, count};
use crate::domain::{Email, Page, Username};
use crate::events::{Deleted, DomainEvent, UserState};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl User {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            email: row.try_get("email")?,
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

pub struct NewUser {
    pub username: Username,
    pub email: Email,
    /// Already hashed (argon2id PHC string).
    pub password_hash: String,
}

#[derive(Default)]
pub struct UserChanges {
    pub username: Option<Username>,
    pub email: Option<Email>,
}

/// A user with the hash to verify a password against.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

const USER_COLUMNS: &str = "id, username, email, version, created_at, updated_at";

async fn find(tx: &mut Transaction<'static, Any>, id: i64) -> Result<User, StoreError> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound { entity: "user", id })?;
    Ok(User::from_row(&row)?)
}

/// Fails with `Taken` when another user holds `key` in `column`; the unique
/// index is the final word under races, this gives the clear message.
async fn ensure_free(
    tx: &mut Transaction<'static, Any>,
    column: &'static str,
    key: &str,
    except: i64,
) -> Result<(), StoreError> {
    let field = column.trim_end_matches("_key");
    let row = sqlx::query(&format!(
        "SELECT COUNT(*) FROM users WHERE {column} = $1 AND id <> $2"
    ))
    .bind(key)
    .bind(except)
    .fetch_one(&mut **tx)
    .await?;
    if count(&row)? > 0 {
        return Err(StoreError::Taken { field });
    }
    Ok(())
}

fn check_expected(
    entity: &'static str,
    current: i64,
    id: i64,
    expected: Option<i64>,
) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != current => Err(StoreError::Conflict {
            entity,
            id,
            expected,
        }),
        _ => Ok(()),
    }
}

impl Store {
    pub async fn create_user(
        &self,
        new: NewUser,
        traceparent: Option<&str>,
    ) -> Result<User, StoreError> {
        self.create_user_once(new, traceparent, None).await
    }

    /// As [`Store::create_user`], recording the answer for `idempotency`
    /// in the same transaction.
    pub async fn create_user_once(
        &self,
        new: NewUser,
        traceparent: Option<&str>,
        idempotency: Option<&Idempotency>,
    ) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await?;
        ensure_free(&mut tx, "username_key", &new.username.key(), 0).await?;
        ensure_free(&mut tx, "email_key", &new.email.key(), 0).await?;
        let id = next_id(&mut tx, "user").await?;
        let event = DomainEvent::UserCreated(UserState {
            id,
            username: new.username.as_str().to_owned(),
            email: new.email.as_str().to_owned(),
        });
        record(&mut tx, &event, 1, traceparent).await?;
        sqlx::query("INSERT INTO credentials (user_id, password_hash) VALUES ($1, $2)")
            .bind(id)
            .bind(&new.password_hash)
            .execute(&mut *tx)
            .await?;
        let user = find(&mut tx, id).await?;
        if let Some(idempotency) = idempotency {
            super::idempotency::remember(&mut tx, idempotency, &user).await?;
        }
        self.commit(tx).await?;
        Ok(user)
    }

    pub async fn update_user(
        &self,
        id: i64,
        changes: UserChanges,
        expected_version: Option<i64>,
        traceparent: Option<&str>,
    ) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current = find(&mut tx, id).await?;
        check_expected("user", current.version, id, expected_version)?;
        if let Some(username) = &changes.username {
            ensure_free(&mut tx, "username_key", &username.key(), id).await?;
        }
        if let Some(email) = &changes.email {
            ensure_free(&mut tx, "email_key", &email.key(), id).await?;
        }
        let event = DomainEvent::UserUpdated(UserState {
            id,
            username: changes
                .username
                .map_or(current.username, |u| u.as_str().to_owned()),
            email: changes
                .email
                .map_or(current.email, |e| e.as_str().to_owned()),
        });
        record(&mut tx, &event, current.version + 1, traceparent).await?;
        let user = find(&mut tx, id).await?;
        self.commit(tx).await?;
        Ok(user)
    }

    pub async fn delete_user(
        &self,
        id: i64,
        expected_version: Option<i64>,
        traceparent: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let current = find(&mut tx, id).await?;
        check_expected("user", current.version, id, expected_version)?;
        record(
            &mut tx,
            &DomainEvent::UserDeleted(Deleted { id }),
            current.version + 1,
            traceparent,
        )
        .await?;
        sqlx::query("DELETE FROM credentials WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn get_user(&self, id: i64) -> Result<User, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { entity: "user", id })?;
        Ok(User::from_row(&row)?)
    }

    /// One page of users by id, and how many there are in all.
    pub async fn list_users(&self, page: Page) -> Result<(Vec<User>, i64), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY id LIMIT $1 OFFSET $2"
        ))
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let users = rows.iter().map(User::from_row).collect::<Result<_, _>>()?;
        Ok((users, self.count_users().await?))
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(count(&row)?)
    }

    /// Users with id greater than `after`, at most `limit`: the keyset
    /// pagination the export stream uses, so memory stays bounded.
    pub async fn users_after(&self, after: i64, limit: i64) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(User::from_row).collect::<Result<_, _>>()?)
    }

    /// The user named `username` (case-insensitively).
    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.username_key = $1"
        ))
        .bind(username.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(User::from_row)
            .transpose()
            .map_err(|e: sqlx::Error| e.into())
    }

    /// The user whose username or email (either, case-insensitively) is
    /// `login`, with the stored hash.
    pub async fn credentials(&self, login: &str) -> Result<Option<Credentials>, StoreError> {
        let key = login.to_ascii_lowercase();
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, c.password_hash FROM users u JOIN credentials c ON c.user_id = u.id \
             WHERE u.username_key = $1 OR u.email_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Credentials {
                user: User::from_row(&row)?,
                password_hash: row.try_get("password_hash")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }
}
