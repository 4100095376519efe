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
//! `cache_misses_total` (labels `cache`, `level`).

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
}

#[derive(Clone)]
pub struct MultilevelCache {
    inner: Arc<Inner>,
}

struct Inner {
    config: CacheConfig,
    l1: moka::future::Cache<String, Arc<Vec<u8>>>,
    l2: Option<RedisLevel>,
    l3: Option<DiskLevel>,
    /// Local invalidations so far.
    epoch: std::sync::atomic::AtomicU64,
}

fn hit(cache: &'static str, level: &'static str) {
    metrics::counter!("cache_hits_total", "cache" => cache, "level" => level).increment(1);
}

fn miss(cache: &'static str, level: &'static str) {
    metrics::counter!("cache_misses_total", "cache" => cache, "level" => level).increment(1);
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

    fn name(&self) -> &'static str {
        self.inner.config.name
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
        if let Some(bytes) = self.inner.l1.get(key).await
            && let Ok(value) = serde_json::from_slice(&bytes)
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
        let bytes = self
            .inner
            .l1
            .try_get_with(owned_key.clone(), async {
                if let Some(bytes) = inner.lower_levels(name, &owned_key).await {
                    return Ok(Arc::new(bytes));
                }
                let value = load().await?;
                let bytes = serialise(&value);
                if inner.epoch() == epoch {
                    inner.fill_lower_levels(&owned_key, &bytes).await;
                }
                Ok::<_, E>(Arc::new(bytes))
            })
            .await?;
        if self.inner.epoch() != epoch {
            // An invalidation ran while this was loaded: the answer may
            // predate it, so it is served once but not kept.
            self.inner.l1.invalidate(key).await;
        }
        match serde_json::from_slice(&bytes) {
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

fn serialise<T: Serialize>(value: &T) -> Vec<u8> {
    // The cached types are plain data and always serialise; should one
    // ever fail, an empty entry fails to decode and is reloaded.
    serde_json::to_vec(value).unwrap_or_default()
}
