//! Uploads in progress on local disk, with offsets that never run ahead
//! of the bytes that are durable. (The tus routes that drive this are
//! coming.)
//!
//! Each upload is two files under the root, named by its id (never by a
//! client's file name): `<id>.part`, the bytes so far, and `<id>.json`,
//! what is known of it, the offset included. A `PATCH` writes the body at
//! the recorded offset, fsyncs, and only then records the new offset
//! (write a temporary file, fsync, rename): a crash before that leaves the
//! old offset, and the bytes past it, never acknowledged, are cut off by
//! the next `PATCH`. A long body records its progress every
//! [`SYNC_EVERY`] bytes, so a dropped connection or a crash keeps most of
//! what arrived; a body with a checksum is kept whole or not at all.

use std::collections::{BTreeMap, HashSet};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::tus::Checksum;

/// Bytes written between two recorded offsets within one body.
pub const SYNC_EVERY: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("no such upload")]
    NotFound,
    /// tus: 409.
    #[error("the upload is at offset {expected}, not {given}")]
    OffsetMismatch { expected: u64, given: u64 },
    /// tus: 413; nothing of the body is kept.
    #[error("the body runs past the upload's length of {length} bytes")]
    PastLength { length: u64 },
    /// tus: 460; nothing of the body is kept.
    #[error("the body does not match its checksum")]
    ChecksumMismatch,
    /// Another request is writing this upload (tus servers answer 423).
    #[error("another request is writing this upload")]
    Busy,
    #[error("the length is already declared")]
    LengthDeclared,
    /// The client's body failed midway; what arrived before is kept
    /// (unless it carried a checksum).
    #[error("the request body failed after {kept} bytes were kept: {reason}")]
    Body { kept: u64, reason: String },
    #[error("the upload store failed")]
    Io(#[from] std::io::Error),
}

/// What is known of an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    pub id: String,
    pub owner: u64,
    /// `None` until declared (creation-defer-length).
    pub length: Option<u64>,
    /// Bytes durable on disk.
    pub offset: u64,
    /// `Upload-Metadata`, values decoded (UTF-8 where they were).
    pub metadata: BTreeMap<String, String>,
    pub created_at_ms: i64,
}

impl UploadInfo {
    pub fn is_complete(&self) -> bool {
        self.length == Some(self.offset)
    }
}

/// The store.
#[derive(Clone)]
pub struct Uploads {
    root: PathBuf,
    /// Uploads a request is writing now, in this process.
    writing: Arc<Mutex<HashSet<String>>>,
}

/// Holds an upload for one writer; lets go when dropped.
struct Writing {
    writing: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for Writing {
    fn drop(&mut self) {
        self.writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// An id this store made: 32 lowercase hex digits, so it is always one
/// file name and never a path.
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Uploads {
    /// The store under `root`, created if missing.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, UploadError> {
        let root = root.into();
        tokio::fs::create_dir_all(&root).await?;
        Ok(Self {
            root,
            writing: Arc::default(),
        })
    }

    fn part(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.part"))
    }

    fn info_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.json"))
    }

    /// A new, empty upload.
    pub async fn create(
        &self,
        owner: u64,
        length: Option<u64>,
        metadata: BTreeMap<String, String>,
    ) -> Result<UploadInfo, UploadError> {
        let info = UploadInfo {
            id: uuid::Uuid::new_v4().simple().to_string(),
            owner,
            length,
            offset: 0,
            metadata,
            created_at_ms: common::jobs::now_ms(),
        };
        let part = tokio::fs::File::create(self.part(&info.id)).await?;
        part.sync_all().await?;
        self.record(&info).await?;
        Ok(info)
    }

    /// What is known of `id`; `None` for an id this store does not have.
    pub async fn get(&self, id: &str) -> Result<Option<UploadInfo>, UploadError> {
        if !valid_id(id) {
            return Ok(None);
        }
        match tokio::fs::read(self.info_path(id)).await {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
                })?))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Records `info` atomically and durably.
    async fn record(&self, info: &UploadInfo) -> Result<(), UploadError> {
        let temporary = self.root.join(format!("{}.json.tmp", info.id));
        let mut file = tokio::fs::File::create(&temporary).await?;
        file.write_all(&serde_json::to_vec(info).unwrap_or_default())
            .await?;
        file.sync_all().await?;
        tokio::fs::rename(&temporary, self.info_path(&info.id)).await?;
        sync_dir(&self.root).await
    }

    fn hold(&self, id: &str) -> Result<Writing, UploadError> {
        let mut writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if !writing.insert(id.to_owned()) {
            return Err(UploadError::Busy);
        }
        Ok(Writing {
            writing: self.writing.clone(),
            id: id.to_owned(),
        })
    }

    /// Declares a deferred length, once.
    pub async fn declare_length(&self, id: &str, length: u64) -> Result<UploadInfo, UploadError> {
        let _held = self.hold(id)?;
        let mut info = self.get(id).await?.ok_or(UploadError::NotFound)?;
        if info.length.is_some() {
            return Err(UploadError::LengthDeclared);
        }
        if length < info.offset {
            return Err(UploadError::PastLength { length });
        }
        info.length = Some(length);
        self.record(&info).await?;
        Ok(info)
    }

    /// Writes `body` at `offset`; the new offset, durable.
    pub async fn append<S, B, E>(
        &self,
        id: &str,
        offset: u64,
        body: S,
        checksum: Option<Checksum>,
    ) -> Result<UploadInfo, UploadError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let _held = self.hold(id)?;
        let mut info = self.get(id).await?.ok_or(UploadError::NotFound)?;
        if offset != info.offset {
            return Err(UploadError::OffsetMismatch {
                expected: info.offset,
                given: offset,
            });
        }
        let start = info.offset;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.part(id))
            .await?;
        // Bytes past the recorded offset were never acknowledged (a crash
        // before their offset was recorded): they go.
        file.set_len(start).await?;
        file.seek(SeekFrom::Start(start)).await?;
        let mut hasher = checksum.as_ref().map(|_| Sha256::new());
        let mut written = 0u64;
        let mut unrecorded = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    let reason = error.to_string();
                    // A body with a checksum cannot be verified in part.
                    let keep = if hasher.is_some() { 0 } else { written };
                    file.set_len(start + keep).await?;
                    file.sync_data().await?;
                    info.offset = start + keep;
                    self.record(&info).await?;
                    return Err(UploadError::Body { kept: keep, reason });
                }
            };
            let chunk = chunk.as_ref();
            if let Some(length) = info.length
                && start + written + chunk.len() as u64 > length
            {
                file.set_len(start).await?;
                file.sync_data().await?;
                if info.offset != start {
                    info.offset = start;
                    self.record(&info).await?;
                }
                return Err(UploadError::PastLength { length });
            }
            file.write_all(chunk).await?;
            if let Some(hasher) = &mut hasher {
                hasher.update(chunk);
            }
            written += chunk.len() as u64;
            unrecorded += chunk.len() as u64;
            if hasher.is_none() && unrecorded >= SYNC_EVERY {
                file.sync_data().await?;
                info.offset = start + written;
                self.record(&info).await?;
                unrecorded = 0;
            }
        }
        if let (Some(hasher), Some(Checksum::Sha256(expected))) = (hasher, &checksum)
            && hasher.finalize().as_slice() != expected
        {
            file.set_len(start).await?;
            file.sync_data().await?;
            return Err(UploadError::ChecksumMismatch);
        }
        file.sync_data().await?;
        info.offset = start + written;
        self.record(&info).await?;
        Ok(info)
    }

    /// Removes the upload and its bytes (termination, expiry).
    pub async fn terminate(&self, id: &str) -> Result<(), UploadError> {
        let _held = self.hold(id)?;
        if self.get(id).await?.is_none() {
            return Err(UploadError::NotFound);
        }
        // The record first: without it the bytes are no upload.
        tokio::fs::remove_file(self.info_path(id)).await?;
        match tokio::fs::remove_file(self.part(id)).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => sync_dir(&self.root).await,
        }
    }

    /// Where `id`'s bytes are, for the completion that moves them.
    pub fn bytes_path(&self, id: &str) -> Option<PathBuf> {
        valid_id(id).then(|| self.part(id))
    }
}

async fn sync_dir(dir: &Path) -> Result<(), UploadError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    type Chunk = Result<Vec<u8>, String>;

    fn body(chunks: &[&[u8]]) -> impl Stream<Item = Chunk> {
        stream::iter(chunks.iter().map(|c| Ok(c.to_vec())).collect::<Vec<_>>())
    }

    async fn store() -> (Uploads, test_support::TempDir) {
        let dir = test_support::TempDir::new("uploads");
        (
            Uploads::open(dir.path().join("uploads")).await.unwrap(),
            dir,
        )
    }

    #[tokio::test]
    async fn bytes_append_at_the_recorded_offset_until_the_length() {
        let (uploads, _dir) = store().await;
        let info = uploads.create(7, Some(10), BTreeMap::new()).await.unwrap();
        let info = uploads
            .append(&info.id, 0, body(&[b"hello", b" "]), None)
            .await
            .unwrap();
        assert_eq!(info.offset, 6);
        let error = uploads
            .append(&info.id, 0, body(&[b"x"]), None)
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            UploadError::OffsetMismatch {
                expected: 6,
                given: 0
            }
        ));
        let error = uploads
            .append(&info.id, 6, body(&[b"world!"]), None)
            .await
            .unwrap_err();
        assert!(matches!(error, UploadError::PastLength { length: 10 }));
        assert_eq!(uploads.get(&info.id).await.unwrap().unwrap().offset, 6);
        let info = uploads
            .append(&info.id, 6, body(&[b"you!"]), None)
            .await
            .unwrap();
        assert!(info.is_complete());
        let path = uploads.bytes_path(&info.id).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"hello you!");
    }

    #[tokio::test]
    async fn a_wrong_checksum_keeps_nothing_of_the_body() {
        let (uploads, _dir) = store().await;
        let info = uploads.create(7, None, BTreeMap::new()).await.unwrap();
        let right: [u8; 32] = Sha256::digest(b"abc").into();
        let error = uploads
            .append(&info.id, 0, body(&[b"abd"]), Some(Checksum::Sha256(right)))
            .await
            .unwrap_err();
        assert!(matches!(error, UploadError::ChecksumMismatch));
        assert_eq!(uploads.get(&info.id).await.unwrap().unwrap().offset, 0);
        let info = uploads
            .append(
                &info.id,
                0,
                body(&[b"a", b"bc"]),
                Some(Checksum::Sha256(right)),
            )
            .await
            .unwrap();
        assert_eq!(info.offset, 3);
    }

    #[tokio::test]
    async fn a_body_that_breaks_keeps_what_arrived_unless_it_had_a_checksum() {
        let (uploads, _dir) = store().await;
        let info = uploads.create(7, None, BTreeMap::new()).await.unwrap();
        let broken = stream::iter(vec![Ok(b"12345".to_vec()), Err("reset".to_owned())]);
        let error = uploads.append(&info.id, 0, broken, None).await.unwrap_err();
        assert!(matches!(error, UploadError::Body { kept: 5, .. }));
        assert_eq!(uploads.get(&info.id).await.unwrap().unwrap().offset, 5);
        let broken = stream::iter(vec![Ok(b"678".to_vec()), Err("reset".to_owned())]);
        let sum = Checksum::Sha256(Sha256::digest(b"678").into());
        let error = uploads
            .append(&info.id, 5, broken, Some(sum))
            .await
            .unwrap_err();
        assert!(matches!(error, UploadError::Body { kept: 0, .. }));
        assert_eq!(uploads.get(&info.id).await.unwrap().unwrap().offset, 5);
    }

    #[tokio::test]
    async fn bytes_past_the_recorded_offset_are_cut_off_by_the_next_write() {
        let (uploads, _dir) = store().await;
        let info = uploads.create(7, None, BTreeMap::new()).await.unwrap();
        uploads
            .append(&info.id, 0, body(&[b"kept"]), None)
            .await
            .unwrap();
        // As a crash after writing, before recording the offset, leaves it.
        let path = uploads.bytes_path(&info.id).unwrap();
        let mut part = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut part, b"never acknowledged").unwrap();
        assert_eq!(uploads.get(&info.id).await.unwrap().unwrap().offset, 4);
        uploads
            .append(&info.id, 4, body(&[b"+more"]), None)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"kept+more");
    }

    #[tokio::test]
    async fn one_writer_at_a_time_and_ids_are_never_paths() {
        let (uploads, _dir) = store().await;
        let info = uploads.create(7, None, BTreeMap::new()).await.unwrap();
        let _held = uploads.hold(&info.id).unwrap();
        let error = uploads
            .append(&info.id, 0, body(&[b"x"]), None)
            .await
            .unwrap_err();
        assert!(matches!(error, UploadError::Busy));
        for id in ["../../etc/passwd", "", "ABCDEF", &"a".repeat(33), "/tmp/x"] {
            assert_eq!(uploads.get(id).await.unwrap(), None, "{id}");
            assert!(uploads.bytes_path(id).is_none());
        }
    }

    #[tokio::test]
    async fn a_deferred_length_is_declared_once_and_termination_removes_the_bytes() {
        let (uploads, _dir) = store().await;
        let info = uploads.create(7, None, BTreeMap::new()).await.unwrap();
        uploads
            .append(&info.id, 0, body(&[b"abc"]), None)
            .await
            .unwrap();
        assert!(matches!(
            uploads.declare_length(&info.id, 2).await.unwrap_err(),
            UploadError::PastLength { length: 2 }
        ));
        assert_eq!(
            uploads.declare_length(&info.id, 5).await.unwrap().length,
            Some(5)
        );
        assert!(matches!(
            uploads.declare_length(&info.id, 6).await.unwrap_err(),
            UploadError::LengthDeclared
        ));
        let path = uploads.bytes_path(&info.id).unwrap();
        uploads.terminate(&info.id).await.unwrap();
        assert!(!path.exists());
        assert_eq!(uploads.get(&info.id).await.unwrap(), None);
        assert!(matches!(
            uploads.terminate(&info.id).await.unwrap_err(),
            UploadError::NotFound
        ));
    }
}
