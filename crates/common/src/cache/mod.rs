//! `MultilevelCache`: one read path over three cache levels.
//!
//! - **L1**: in-process (moka), small and short-lived, per replica;
//! - **L2**: Redis (fred), shared by every replica;
//! - **L3**: files on local disk, surviving restarts.
//!
//! A read tries L1, then L2, then L3, then the loader, filling the levels
//! it passed on the way back. Concurrent misses for one key share a single
//! load (moka's `try_get_with` coalesces them). A write calls
//! [`MultilevelCache::invalidate`], which clears every level here and, via
//! Redis pub/sub, every other replica's L1 and L3. Without Redis the cache
//! is L1 + disk and invalidation is local. Loader errors are never cached.
//! A load that an invalidation overtakes fills nothing (an epoch counts
//! local invalidations), so it cannot put back what was just removed; see
//! [`RedisLevel`] for the same promise across replicas and outages.
//!
//! Hits and misses are counted per level in `cache_hits_total` and
//! `cache_misses_total` (labels `cache`, `level`). A key over
//! [`MAX_KEY_BYTES`] or a value over [`CacheConfig::max_value_bytes`] is
//! loaded and served but not kept, counted in `cache_oversized_total`
//! (label `what`: `key` or `value`).
//!
//! **Refresh-ahead** (the seed's GetWithPrefetch,
//! [`MultilevelCache::get_or_load_refreshing`]): a read of an entry in the
//! last stretch of its L1 life is answered from the cache at once and
//! starts one background reload — one per key in this process, and, with
//! a [`crate::lock::Locks`], one across replicas — so a popular key never
//! expires into a herd of loads. Counted in `cache_refresh_ahead_total`.

mod disk;
mod redis;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use redis::{RedisConnectError, RedisLevel};

use disk::DiskLevel;

#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Name in metrics (the `cache` label).
    pub name: &'static str,
    /// Prefix of Redis keys (`cache:<namespace>:<key>`) and of the
    /// invalidation channel: deployments sharing one Redis use different
    /// namespaces.
    pub namespace: String,
    pub l1_capacity: u64,
    pub l1_ttl: Duration,
    pub l2_ttl: Duration,
    pub l3_ttl: Duration,
    /// Directory of the disk level; `None` disables it.
    pub disk_dir: Option<PathBuf>,
    /// A value larger than this (serialised) is served but kept at no
    /// level: one huge entry would evict thousands from L1 and stall
    /// Redis for everyone while it crosses the wire.
    pub max_value_bytes: usize,
}

impl CacheConfig {
    /// The default of [`CacheConfig::max_value_bytes`].
    pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;
}

/// Keys longer than this are not cached (their values are loaded every
/// time): a key is copied into every level and every invalidation.
pub const MAX_KEY_BYTES: usize = 512;

#[derive(Clone)]
pub struct MultilevelCache {
    inner: Arc<Inner>,
}

struct Inner {
    config: CacheConfig,
    l1: moka::future::Cache<String, Arc<Cached>>,
    /// Set once, after the invalidation follower holds a reference.
    refresh: std::sync::OnceLock<RefreshAhead>,
    /// Keys this process is refreshing now.
    refreshing: std::sync::Mutex<std::collections::HashSet<String>>,
    l2: Option<RedisLevel>,
    l3: Option<DiskLevel>,
    /// Local invalidations so far.
    epoch: std::sync::atomic::AtomicU64,
}

/// An L1 entry and when L1 drops it.
struct Cached {
    bytes: Vec<u8>,
    expires: tokio::time::Instant,
}

/// When and under what lock entries are refreshed ahead of expiry.
#[derive(Clone)]
pub struct RefreshAhead {
    /// A read this close to an entry's L1 expiry refreshes it.
    pub window: Duration,
    /// Makes the refresh once across replicas; per process without.
    pub locks: Option<crate::lock::Locks>,
}

fn hit(cache: &'static str, level: &'static str) {
    metrics::counter!("cache_hits_total", "cache" => cache, "level" => level).increment(1);
}

fn miss(cache: &'static str, level: &'static str) {
    metrics::counter!("cache_misses_total", "cache" => cache, "level" => level).increment(1);
}

fn oversized(cache: &'static str, what: &'static str, bytes: usize) {
    tracing::debug!(cache, what, bytes, "too large to cache; served uncached");
    metrics::counter!("cache_oversized_total", "cache" => cache, "what" => what).increment(1);
}

impl MultilevelCache {
    /// A cache with an optional shared Redis level. With Redis, this
    /// replica also starts following invalidations from the others.
    pub async fn new(config: CacheConfig, l2: Option<RedisLevel>) -> Self {
        let l1 = moka::future::Cache::builder()
            .max_capacity(config.l1_capacity)
            .time_to_live(config.l1_ttl)
            .build();
        let l3 = config
            .disk_dir
            .clone()
            .map(|dir| DiskLevel::new(dir, config.l3_ttl));
        let cache = Self {
            inner: Arc::new(Inner {
                config,
                l1,
                refresh: std::sync::OnceLock::new(),
                refreshing: Default::default(),
                l2,
                l3,
                epoch: Default::default(),
            }),
        };
        if let Some(l2) = &cache.inner.l2 {
            l2.follow_invalidations(
                cache.inner.config.namespace.clone(),
                Arc::downgrade(&cache.inner),
            );
        }
        cache
    }

    /// Refreshes entries read within `refresh.window` of their L1 expiry
    /// (for [`Self::get_or_load_refreshing`]). Call before sharing the
    /// cache.
    pub fn with_refresh_ahead(self, refresh: RefreshAhead) -> Self {
        if self.inner.refresh.set(refresh).is_err() {
            tracing::warn!(
                cache = self.name(),
                "refresh-ahead was set already; kept the first"
            );
        }
        self
    }

    fn name(&self) -> &'static str {
        self.inner.config.name
    }

    /// As [`Self::get_or_load`], and an entry read close to its expiry is
    /// reloaded in the background (see the module's refresh-ahead), its
    /// reader answered from the cache meanwhile.
    pub async fn get_or_load_refreshing<T, E, F, Fut>(
        &self,
        key: &str,
        load: F,
    ) -> Result<T, Arc<E>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Send + Sync + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    {
        let load = Arc::new(load);
        if let Some(refresh) = self.inner.refresh.get()
            && let Some(cached) = self.inner.l1.get(key).await
            && cached
                .expires
                .saturating_duration_since(tokio::time::Instant::now())
                < refresh.window
        {
            self.refresh_in_background(key, refresh.clone(), load.clone());
        }
        self.get_or_load(key, move || load()).await
    }

    fn refresh_in_background<T, E, F, Fut>(&self, key: &str, refresh: RefreshAhead, load: Arc<F>)
    where
        T: Serialize + Send + 'static,
        E: Send + Sync + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    {
        {
            let mut refreshing = self
                .inner
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !refreshing.insert(key.to_owned()) {
                return;
            }
        }
        let inner = self.inner.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let name = inner.config.name;
            let lock_name = refresh_lock_name(&inner.config.namespace, &key);
            // Held for the reload only: another replica that asks meanwhile
            // leaves it to this one.
            let guard = match &refresh.locks {
                Some(locks) => match locks.try_acquire(&lock_name, Duration::from_secs(30)).await {
                    Ok(Some(guard)) => Some(guard),
                    Ok(None) => {
                        inner.done_refreshing(&key);
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(%error, cache = name, "no refresh-ahead lock; refreshing here");
                        None
                    }
                },
                None => None,
            };
            let epoch = inner.epoch();
            if let Ok(value) = load().await {
                let bytes = serialise(&value);
                if bytes.len() > inner.config.max_value_bytes {
                    // What the levels hold is out of date and the new value
                    // is not kept: gone everywhere, so readers load it.
                    oversized(name, "value", bytes.len());
                    MultilevelCache {
                        inner: inner.clone(),
                    }
                    .invalidate(&key)
                    .await;
                } else if inner.epoch() == epoch {
                    if let Some(l2) = &inner.l2 {
                        l2.refresh(&inner.config.namespace, &key, &bytes, inner.config.l2_ttl)
                            .await;
                    }
                    if let Some(l3) = &inner.l3 {
                        l3.set(&key, &bytes).await;
                    }
                    inner.l1.insert(key.clone(), inner.cached(bytes)).await;
                    metrics::counter!("cache_refresh_ahead_total", "cache" => name).increment(1);
                }
            }
            if let Some(guard) = guard {
                let _ = guard.release().await;
            }
            inner.done_refreshing(&key);
        });
    }

    /// The value for `key`: from the first level that has it, else from
    /// `load`, whose result fills every level. A loader error is shared by
    /// every caller that waited on the same load, hence the `Arc`.
    pub async fn get_or_load<T, E, F, Fut>(&self, key: &str, load: F) -> Result<T, Arc<E>>
    where
        T: Serialize + DeserializeOwned,
        E: Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let name = self.name();
        if key.len() > MAX_KEY_BYTES {
            oversized(name, "key", key.len());
            return load().await.map_err(Arc::new);
        }
        if let Some(cached) = self.inner.l1.get(key).await
            && let Ok(value) = serde_json::from_slice(&cached.bytes)
        {
            hit(name, "l1");
            return Ok(value);
        }
        miss(name, "l1");
        let inner = self.inner.clone();
        let owned_key = key.to_owned();
        let epoch = self.inner.epoch();
        // Coalesced: one caller runs this block per key at a time; the
        // others wait for its result.
        let cached = self
            .inner
            .l1
            .try_get_with(owned_key.clone(), async {
                if let Some(bytes) = inner.lower_levels(name, &owned_key).await {
                    return Ok(inner.cached(bytes));
                }
                let value = load().await?;
                let bytes = serialise(&value);
                if bytes.len() > inner.config.max_value_bytes {
                    oversized(name, "value", bytes.len());
                } else if inner.epoch() == epoch {
                    inner.fill_lower_levels(&owned_key, &bytes).await;
                }
                Ok::<_, E>(inner.cached(bytes))
            })
            .await?;
        if self.inner.epoch() != epoch || cached.bytes.len() > self.inner.config.max_value_bytes {
            // An invalidation ran while this was loaded: the answer may
            // predate it, so it is served once but not kept. (Or it is
            // too large to keep: the callers that waited for it share it.)
            self.inner.l1.invalidate(key).await;
        }
        match serde_json::from_slice(&cached.bytes) {
            Ok(value) => Ok(value),
            Err(error) => {
                // Written by an older version with another shape: drop it
                // everywhere and serve a fresh load, uncached this once.
                tracing::warn!(cache = name, key, %error, "cached value no longer decodes; reloading");
                self.invalidate(key).await;
                load().await.map_err(Arc::new)
            }
        }
    }

    /// Removes `key` from every level here and tells the other replicas.
    pub async fn invalidate(&self, key: &str) {
        self.inner.forget_locally(key).await;
        if let Some(l2) = &self.inner.l2 {
            l2.delete_and_announce(&self.inner.config.namespace, key)
                .await;
        }
    }

    /// Forgets everything this replica holds and tells the others to do
    /// the same; Redis entries of the old generation are never read again.
    pub async fn invalidate_all(&self) {
        self.inner.forget_all_locally().await;
        if let Some(l2) = &self.inner.l2 {
            l2.new_generation(&self.inner.config.namespace).await;
        }
    }
}

impl Inner {
    fn cached(&self, bytes: Vec<u8>) -> Arc<Cached> {
        Arc::new(Cached {
            bytes,
            expires: tokio::time::Instant::now() + self.config.l1_ttl,
        })
    }

    fn done_refreshing(&self, key: &str) {
        self.refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump_epoch(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
    /// L2, then L3 (copying an L3 hit up to L2).
    async fn lower_levels(&self, name: &'static str, key: &str) -> Option<Vec<u8>> {
        let namespace = &self.config.namespace;
        if let Some(l2) = &self.l2 {
            if let Some(bytes) = l2.get(namespace, key).await {
                hit(name, "l2");
                return Some(bytes);
            }
            miss(name, "l2");
        }
        if let Some(l3) = &self.l3 {
            if let Some(bytes) = l3.get(key).await {
                hit(name, "l3");
                if let Some(l2) = &self.l2 {
                    l2.set(namespace, key, &bytes, self.config.l2_ttl).await;
                }
                return Some(bytes);
            }
            miss(name, "l3");
        }
        None
    }

    async fn fill_lower_levels(&self, key: &str, bytes: &[u8]) {
        if let Some(l2) = &self.l2 {
            l2.set(&self.config.namespace, key, bytes, self.config.l2_ttl)
                .await;
        }
        if let Some(l3) = &self.l3 {
            l3.set(key, bytes).await;
        }
    }

    async fn forget_locally(&self, key: &str) {
        self.bump_epoch();
        self.l1.invalidate(key).await;
        if let Some(l3) = &self.l3 {
            l3.remove(key).await;
        }
    }

    async fn forget_all_locally(&self) {
        self.bump_epoch();
        self.l1.invalidate_all();
        if let Some(l3) = &self.l3 {
            l3.clear().await;
        }
    }
}

/// The lock that makes a refresh once across replicas: named by a digest
/// when the key would make the name longer than a lock's name may be.
fn refresh_lock_name(namespace: &str, key: &str) -> String {
    let name = format!("cache-refresh:{namespace}:{key}");
    if name.len() <= crate::lock::MAX_NAME_BYTES {
        return name;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cache-refresh:#{hex}")
}

fn serialise<T: Serialize>(value: &T) -> Vec<u8> {
    // The cached types are plain data and always serialise; should one
    // ever fail, an empty entry fails to decode and is reloaded.
    serde_json::to_vec(value).unwrap_or_default()
}
