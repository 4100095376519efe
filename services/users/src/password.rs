//! Password hashing with argon2id (OWASP's recommended parameters:
//! 19 MiB, 2 passes, 1 lane), off the async threads and behind a bulkhead.
//!
//! Each hash holds 19 MiB for tens of milliseconds, so hashes running at
//! once are what a login flood turns into memory. [`Hasher`] runs at most
//! `concurrency` of them (one per core is all the CPU can serve anyway),
//! lets at most `queue` more of each kind (sign-ups, sign-ins) wait, and
//! refuses the rest at once with
//! [`HashError::Busy`], which the API answers `RESOURCE_EXHAUSTED`: the
//! caller is told to come back instead of being parked in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many passwords are being checked; retry shortly")]
    Busy,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// How many hashes run and wait at once (`USERS_HASH_CONCURRENCY`,
/// `USERS_HASH_QUEUE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashLimits {
    pub concurrency: usize,
    pub queue: usize,
}

impl Default for HashLimits {
    /// One hash per core, and as many again waiting.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            concurrency: cores,
            queue: cores,
        }
    }
}

/// The bulkhead in front of argon2; cheap to clone.
///
/// Sign-ups (hashing) and sign-ins (verifying) are admitted separately,
/// each with its own `concurrency + queue` places, and share the running
/// slots (handed out in arrival order): a flood of anonymous sign-ups fills
/// only its own queue, so sign-ins still get in.
#[derive(Clone)]
pub struct Hasher {
    /// Admission of sign-ups: running plus waiting. A request that cannot
    /// take one of these is refused without waiting.
    admitted_hash: Arc<Semaphore>,
    /// The same for sign-ins.
    admitted_verify: Arc<Semaphore>,
    /// The hashes that run.
    running: Arc<Semaphore>,
    concurrency: usize,
    /// The most hashes that ever ran at once (`users_password_hashes_peak`):
    /// what an operator sizes the bound and the memory limit by.
    peak: Arc<AtomicUsize>,
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

impl Hasher {
    pub fn new(limits: HashLimits) -> Self {
        let concurrency = limits.concurrency.max(1);
        Self {
            admitted_hash: Arc::new(Semaphore::new(concurrency + limits.queue)),
            admitted_verify: Arc::new(Semaphore::new(concurrency + limits.queue)),
            running: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            peak: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Hashes in flight now (a gauge, and what the tests bound).
    pub fn in_flight(&self) -> usize {
        self.concurrency - self.running.available_permits()
    }

    async fn run<T: Send + 'static>(
        &self,
        admission: &Arc<Semaphore>,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let Ok(admitted) = admission.clone().try_acquire_owned() else {
            metrics::counter!("users_password_hash_rejected_total").increment(1);
            return Err(HashError::Busy);
        };
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Busy)?;
        let now = self.in_flight();
        if self.peak.fetch_max(now, Ordering::Relaxed) < now {
            metrics::gauge!("users_password_hashes_peak").set(now as f64);
        }
        metrics::gauge!("users_password_hashes_in_flight").increment(1.0);
        // The permits move into the blocking task: if this future is
        // dropped (the caller gave up), the hash still holds its memory
        // until it ends, and the bound must count it until then.
        tokio::task::spawn_blocking(move || {
            let outcome = work();
            drop((running, admitted));
            metrics::gauge!("users_password_hashes_in_flight").decrement(1.0);
            outcome
        })
        .await?
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.run(&self.admitted_hash, move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError::Hash(e.to_string()))
        })
        .await
    }

    /// Whether `password` matches `phc`. With no stored hash (unknown
    /// login) a fixed hash is checked instead, so both cases take the same
    /// time and the answer does not reveal which logins exist.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$8Lv8K1n3OQ0s0g3JmTtWzE1m5Yl7Xq8sN6oZKCq1m3k";
        self.run(&self.admitted_verify, move || {
            let known = phc.is_some();
            let stored = phc.unwrap_or_else(|| DUMMY.to_owned());
            let parsed = PasswordHash::new(&stored).map_err(|e| HashError::Hash(e.to_string()))?;
            let matches = argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            Ok(known && matches)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let hasher = Hasher::new(HashLimits::default());
        let password = Password::parse("correct horse battery").unwrap();
        let a = hasher.hash(password.clone()).await.unwrap();
        let b = hasher.hash(password).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(
            hasher
                .verify("correct horse battery".into(), Some(a.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse battery".into(), Some(a))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("anything at all".into(), None).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sign_up_flood_does_not_shut_out_sign_ins() {
        let hasher = Hasher::new(HashLimits {
            concurrency: 1,
            queue: 1,
        });
        let password = Password::parse("correct horse battery").unwrap();
        let flood: Vec<_> = (0..20)
            .map(|_| {
                let (hasher, password) = (hasher.clone(), password.clone());
                tokio::spawn(async move { hasher.hash(password).await })
            })
            .collect();
        while hasher.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        // Sign-ups beyond their own two places are refused; a sign-in
        // still has its places and is served.
        assert!(!hasher.verify("guess".into(), None).await.unwrap());
        let mut refused = 0;
        for call in flood {
            if matches!(call.await.unwrap(), Err(HashError::Busy)) {
                refused += 1;
            }
        }
        assert!(refused > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_runs_at_most_the_bound_and_refuses_beyond_the_queue() {
        let hasher = Hasher::new(HashLimits {
            concurrency: 2,
            queue: 3,
        });
        let peak = Arc::new(AtomicUsize::new(0));
        let watcher = {
            let (hasher, peak) = (hasher.clone(), peak.clone());
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(hasher.in_flight(), Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        };
        let calls: Vec<_> = (0..40)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.verify("guess".into(), None).await })
            })
            .collect();
        let (mut checked, mut busy) = (0, 0);
        for call in calls {
            match call.await.unwrap() {
                Ok(false) => checked += 1,
                Err(HashError::Busy) => busy += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        watcher.abort();
        assert!(peak.load(Ordering::Relaxed) <= 2);
        assert!(
            checked >= 5,
            "the running and queued ones are served: {checked}"
        );
        assert!(busy > 0, "the rest are refused at once");
        assert_eq!(checked + busy, 40);
        assert_eq!(hasher.in_flight(), 0);
    }
}
