//! L3: one file per key under a directory, written atomically (temporary
//! file, then rename) so a crash never leaves half an entry. Each file
//! holds its expiry time and its key, so a name collision or an expired
//! entry reads as a miss. Disk errors are misses too: a cache must never
//! fail a request.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) struct DiskLevel {
    dir: PathBuf,
    ttl: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl DiskLevel {
    pub(super) fn new(dir: PathBuf, ttl: Duration) -> Self {
        Self { dir, ttl }
    }

    fn path(&self, key: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        self.dir.join(format!("{:016x}.entry", hasher.finish()))
    }

    pub(super) async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let bytes = tokio::fs::read(self.path(key)).await.ok()?;
        let expires = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let key_len =
            usize::try_from(u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?)).ok()?;
        let stored_key = bytes.get(12..12 + key_len)?;
        if expires < now_ms() || stored_key != key.as_bytes() {
            return None;
        }
        Some(bytes.get(12 + key_len..)?.to_vec())
    }

    pub(super) async fn set(&self, key: &str, value: &[u8]) {
        let Ok(key_len) = u32::try_from(key.len()) else {
            return;
        };
        let expires =
            now_ms().saturating_add(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        let mut bytes = Vec::with_capacity(12 + key.len() + value.len());
        bytes.extend_from_slice(&expires.to_le_bytes());
        bytes.extend_from_slice(&key_len.to_le_bytes());
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend_from_slice(value);
        let path = self.path(key);
        let tmp = path.with_extension(format!("tmp{}", uuid::Uuid::new_v4().simple()));
        let written = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(error) = written {
            tracing::debug!(%error, "disk cache write failed");
            let _ = tokio::fs::remove_file(&tmp).await;
        }
    }

    pub(super) async fn remove(&self, key: &str) {
        let _ = tokio::fs::remove_file(self.path(key)).await;
    }

    pub(super) async fn clear(&self) {
        if let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }
}
