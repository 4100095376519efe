use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when dropped; services under test keep their embedded
/// data (SQLite files, disk caches) here instead of in the checkout.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// `label` makes leftovers of a crashed run recognisable.
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{label}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }

    /// `sqlite://<dir>/<name>`, a database file in this directory.
    pub fn sqlite_url(&self, name: &str) -> String {
        format!("sqlite://{}", self.0.join(name).display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
