//! Distributed locks with fencing tokens: the seed's DistributedLock, done
//! so that losing a lock cannot corrupt what it guards.
//!
//! A [`LockGuard`] holds a lease that is extended in the background while
//! the guard lives, and a **fencing token**: a number that grows with every
//! acquisition of the lock (a hybrid clock: the larger of the deciding
//! server's clock in µs and the last token + 1, so it keeps growing across
//! a failover that lost the last one). A holder passes its token along with every
//! write to the guarded resource, and the resource refuses a token lower
//! than one it has seen ([`Fence`]). That, not the lock alone, is what
//! keeps the resource safe.
//!
//! What this does not promise (the Redlock debate): one Redis primary
//! decides each lock (its slot's primary in a cluster), with no quorum
//! across primaries. A failover can lose a lock — the replica that takes
//! over may not have it — and a holder paused past its lease (a GC pause,
//! a stopped VM) still believes it holds one. Both end with two holders
//! for a while; the fencing token tells the resource which one is current.
//! The guard's [`LockGuard::lost`] fires once an extension fails, so a
//! holder can stop early, but it is advice, not a guarantee.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use memory::MemoryLocks;
#[cfg(feature = "redis")]
pub use redis::RedisLocks;

/// Names are at most this long (they become Redis keys).
pub const MAX_NAME_BYTES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("invalid lock: {0}")]
    Invalid(String),
    #[error("the lock service is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What a backend does; [`Locks`] adds waiting, extension and metrics.
#[async_trait]
pub trait LockBackend: Send + Sync + 'static {
    fn backend(&self) -> &'static str;

    /// Takes `name` for `lease` under `token` unless someone holds it;
    /// the new fencing token when taken.
    async fn try_lock(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Option<u64>, LockError>;

    /// Extends the lease if `token` still holds it.
    async fn extend(&self, name: &str, token: &str, lease: Duration) -> Result<bool, LockError>;

    /// Lets go if `token` still holds it.
    async fn unlock(&self, name: &str, token: &str) -> Result<bool, LockError>;
}

/// The seed's LockService: locks by name on one backend.
#[derive(Clone)]
pub struct Locks {
    backend: Arc<dyn LockBackend>,
    shared: Arc<Shared>,
}

/// What every guard of one [`Locks`] uses: metric handles built once
/// (building a labelled key on every call costs more than the rest of the
/// client-side work), and where holder tokens come from.
struct Shared {
    acquired: metrics::Counter,
    waited: metrics::Histogram,
    wait_timeouts: metrics::Counter,
    extended: metrics::Counter,
    lost: metrics::Counter,
    /// Random per `Locks`, so tokens differ across processes...
    token_prefix: String,
    /// ...and counted within one, so they never repeat here.
    tokens: AtomicU64,
}

impl Shared {
    fn new(backend: &'static str) -> Self {
        Self {
            acquired: metrics::counter!("locks_acquired_total", "backend" => backend),
            waited: metrics::histogram!("locks_wait_seconds", "backend" => backend),
            wait_timeouts: metrics::counter!("locks_wait_timeouts_total", "backend" => backend),
            extended: metrics::counter!("locks_extended_total", "backend" => backend),
            lost: metrics::counter!("locks_lost_total", "backend" => backend),
            token_prefix: uuid::Uuid::new_v4().simple().to_string(),
            tokens: AtomicU64::new(0),
        }
    }

    /// A holder token no other acquisition anywhere uses.
    fn token(&self) -> String {
        let n = self.tokens.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n:x}", self.token_prefix)
    }
}

fn check_name(name: &str) -> Result<(), LockError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(LockError::Invalid(format!(
            "a lock's name is 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

impl Locks {
    pub fn new(backend: Arc<dyn LockBackend>) -> Self {
        let shared = Arc::new(Shared::new(backend.backend()));
        Self { backend, shared }
    }

    /// In this process only: the embedded default.
    pub fn in_process() -> Self {
        Self::new(Arc::new(MemoryLocks::default()))
    }

    pub fn backend(&self) -> &'static str {
        self.backend.backend()
    }

    /// Takes `name` now, or `None` if another holder has it.
    pub async fn try_acquire(
        &self,
        name: &str,
        lease: Duration,
    ) -> Result<Option<LockGuard>, LockError> {
        check_name(name)?;
        if lease < Duration::from_millis(10) {
            return Err(LockError::Invalid("a lease is at least 10 ms".into()));
        }
        let token = self.shared.token();
        let taken = self.backend.try_lock(name, &token, lease).await?;
        Ok(taken.map(|fencing| {
            self.shared.acquired.increment(1);
            LockGuard::start(self, name.to_owned(), token, fencing, lease)
        }))
    }

    /// Takes `name`, waiting up to `wait` for its holder to let go (polling
    /// with backoff); `None` when the wait ran out.
    pub async fn acquire(
        &self,
        name: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<LockGuard>, LockError> {
        let started = tokio::time::Instant::now();
        let deadline = started + wait;
        let mut pause = Duration::from_millis(5);
        loop {
            // A backend that fails (a failover in progress) is asked again
            // within the wait; its error is the answer only if it never
            // came back.
            let failure = match self.try_acquire(name, lease).await {
                Ok(Some(guard)) => {
                    self.shared.waited.record(started.elapsed().as_secs_f64());
                    return Ok(Some(guard));
                }
                Ok(None) => None,
                Err(LockError::Invalid(reason)) => return Err(LockError::Invalid(reason)),
                Err(error) => Some(error),
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                if let Some(error) = failure {
                    return Err(error);
                }
                self.shared.wait_timeouts.increment(1);
                return Ok(None);
            }
            // Jittered, so waiters do not all ask at once.
            let jittered = pause.mul_f64(0.5 + fastrand::f64() / 2.0);
            tokio::time::sleep(jittered.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

/// A held lock. Its lease is extended every third of the lease while the
/// guard lives; dropping the guard lets the lock go (in the background),
/// [`LockGuard::release`] lets it go and says whether it was still held.
pub struct LockGuard {
    name: String,
    fencing: u64,
    lost: CancellationToken,
    /// Until released: what letting go takes.
    held: Option<Held>,
}

struct Held {
    backend: Arc<dyn LockBackend>,
    token: String,
    /// Ends the extension task.
    stop: CancellationToken,
}

impl LockGuard {
    fn start(locks: &Locks, name: String, token: String, fencing: u64, lease: Duration) -> Self {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        tokio::spawn(extend_while_held(
            locks.clone(),
            name.clone(),
            token.clone(),
            lease,
            stop.clone(),
            lost.clone(),
        ));
        Self {
            name,
            fencing,
            lost,
            held: Some(Held {
                backend: locks.backend.clone(),
                token,
                stop,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Grows with every acquisition of this lock: pass it with every write
    /// to what the lock guards.
    pub fn fencing_token(&self) -> u64 {
        self.fencing
    }

    /// Whether the lease is still believed held (no extension has failed).
    pub fn is_held(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// Completes once an extension failed: stop working on the resource.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }

    /// Lets the lock go; false when it had already been lost.
    pub async fn release(mut self) -> Result<bool, LockError> {
        let Some(held) = self.held.take() else {
            return Ok(false);
        };
        held.stop.cancel();
        held.backend.unlock(&self.name, &held.token).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        held.stop.cancel();
        let name = std::mem::take(&mut self.name);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = held.backend.unlock(&name, &held.token).await;
            });
        }
    }
}

/// Extends the lease every third of it until `stop`; cancels `lost` when an
/// extension is refused, or keeps failing until the lease it had ran out.
async fn extend_while_held(
    locks: Locks,
    name: String,
    token: String,
    lease: Duration,
    stop: CancellationToken,
    lost: CancellationToken,
) {
    let every = lease / 3;
    let mut held_until = tokio::time::Instant::now() + lease;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let asked = tokio::time::Instant::now();
        match locks.backend.extend(&name, &token, lease).await {
            Ok(true) => {
                held_until = asked + lease;
                locks.shared.extended.increment(1);
            }
            Ok(false) => break,
            Err(error) if tokio::time::Instant::now() + every < held_until => {
                tracing::warn!(%error, lock = name, "could not extend a lock; trying again");
            }
            Err(_) => break,
        }
    }
    tracing::warn!(lock = name, "lock lost");
    locks.shared.lost.increment(1);
    lost.cancel();
}

/// What a guarded resource keeps to refuse stale holders: the highest
/// fencing token it has accepted. A write with a lower token comes from a
/// holder that lost the lock and is refused.
#[derive(Debug, Default)]
pub struct Fence {
    highest: AtomicU64,
}

impl Fence {
    /// Accepts `token` if it is at least the highest seen (and records it).
    pub fn admit(&self, token: u64) -> bool {
        let mut seen = self.highest.load(Ordering::SeqCst);
        loop {
            if token < seen {
                return false;
            }
            match self
                .highest
                .compare_exchange(seen, token, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => seen = now,
            }
        }
    }
}
