//! The read path for single users and posts: the multi-level cache in
//! front of the read models (`GetUser`, `GetPost`).
//!
//! Writers invalidate after their transaction commits, on every level and
//! every replica. A read racing a write can put the old value back into
//! one replica's L1 just after the invalidation; the short L1 TTL bounds
//! how long that can last.

use std::sync::Arc;

use common::cache::MultilevelCache;

use crate::store::{Post, Store, StoreError, User};

#[derive(Clone)]
pub struct Views {
    store: Store,
    cache: MultilevelCache,
}

fn unshare(error: Arc<StoreError>) -> StoreError {
    Arc::try_unwrap(error).unwrap_or_else(StoreError::Shared)
}

impl Views {
    pub fn new(store: Store, cache: MultilevelCache) -> Self {
        Self { store, cache }
    }

    pub async fn user(&self, id: i64) -> Result<User, StoreError> {
        self.cache
            .get_or_load(&format!("user:{id}"), || self.store.get_user(id))
            .await
            .map_err(unshare)
    }

    pub async fn post(&self, id: i64) -> Result<Post, StoreError> {
        self.cache
            .get_or_load(&format!("post:{id}"), || self.store.get_post(id))
            .await
            .map_err(unshare)
    }

    pub async fn invalidate_user(&self, id: i64) {
        self.cache.invalidate(&format!("user:{id}")).await;
    }

    pub async fn invalidate_post(&self, id: i64) {
        self.cache.invalidate(&format!("post:{id}")).await;
    }

    pub async fn invalidate_all(&self) {
        self.cache.invalidate_all().await;
    }
}
