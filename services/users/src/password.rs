//! Password hashing with argon2id (OWASP's recommended parameters:
//! 19 MiB, 2 passes, 1 lane), off the async threads.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task failed")]
    Join(#[from] tokio::task::JoinError),
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
pub async fn hash(password: Password) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError::Hash(e.to_string()))
    })
    .await?
}

/// Whether `password` matches `phc`. With no stored hash (unknown login) a
/// fixed hash is checked instead, so both cases take the same time and the
/// answer does not reveal which logins exist.
pub async fn verify(password: String, phc: Option<String>) -> Result<bool, HashError> {
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$8Lv8K1n3OQ0s0g3JmTtWzE1m5Yl7Xq8sN6oZKCq1m3k";
    tokio::task::spawn_blocking(move || {
        let known = phc.is_some();
        let stored = phc.unwrap_or_else(|| DUMMY.to_owned());
        let parsed = PasswordHash::new(&stored).map_err(|e| HashError::Hash(e.to_string()))?;
        let matches = argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let password = Password::parse("correct horse battery").unwrap();
        let a = hash(password.clone()).await.unwrap();
        let b = hash(password).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(
            verify("correct horse battery".into(), Some(a.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse battery".into(), Some(a)).await.unwrap());
        assert!(!verify("anything at all".into(), None).await.unwrap());
    }
}
