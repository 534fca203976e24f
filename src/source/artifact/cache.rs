//! The artifact cache under `<state_dir>/artifacts/`: blobs by digest
//! (`blobs/sha256/<hex>`) and the trees they unpack to (`trees/sha256/<hex>/`).
//!
//! Content addressing makes the cache trivially correct: a blob is stored only when
//! its bytes hash to the digest the index or manifest promised, is checked again
//! when read (a corrupted file is dropped and fetched anew), and a tree appears by
//! one rename once it is complete, so a crash mid-unpack leaves no half tree.

use super::archive::{self, ArchiveError};
use super::digest::Digest;
use crate::config::ArtifactLimits;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Blobs and trees by digest, below one directory.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    root: PathBuf,
}

/// Why an artifact could not be stored or unpacked. The `what` fields name the
/// artifact as the user configured it (chart, version, registry).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error(
        "{what}: digest mismatch: expected {expected}, downloaded {actual}; the artifact changed \
         after it was indexed or in transit, so it was not used"
    )]
    Mismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: {error}")]
    Archive {
        what: String,
        #[source]
        error: ArchiveError,
    },
    #[error("artifact cache {}: {error}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
}

impl ArtifactCache {
    /// The cache of a daemon or CLI run whose state lives in `state_dir`.
    pub(crate) fn new(state_dir: &Path) -> ArtifactCache {
        ArtifactCache {
            root: state_dir.join("artifacts"),
        }
    }

    /// The blob with this digest, if cached and intact.
    pub(crate) fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.blob_path(digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(CacheError::Io { path, error }),
        };
        if Digest::of(&bytes) == *digest {
            return Ok(Some(bytes));
        }
        tracing::warn!(path = %path.display(), "dropping a corrupted cached artifact");
        fs::remove_file(&path).map_err(|error| CacheError::Io { path, error })?;
        Ok(None)
    }

    /// Stores `bytes` if they hash to `expected`; else [`CacheError::Mismatch`]
    /// naming `what`, and nothing is stored.
    pub(crate) fn store(
        &self,
        bytes: &[u8],
        expected: &Digest,
        what: &str,
    ) -> Result<(), CacheError> {
        let actual = Digest::of(bytes);
        if actual != *expected {
            return Err(CacheError::Mismatch {
                what: what.into(),
                expected: expected.clone(),
                actual,
            });
        }
        let path = self.blob_path(expected);
        let dir = self.root.join("blobs/sha256");
        let io_error = |error| CacheError::Io {
            path: dir.clone(),
            error,
        };
        fs::create_dir_all(&dir).map_err(io_error)?;
        let mut file = tempfile::NamedTempFile::new_in(&dir).map_err(io_error)?;
        io::Write::write_all(&mut file, bytes).map_err(io_error)?;
        file.persist(&path).map_err(|error| io_error(error.error))?;
        Ok(())
    }

    /// The directory `bytes` (the blob `digest`, already verified) unpack to,
    /// unpacking them the first time.
    pub(crate) fn tree(
        &self,
        digest: &Digest,
        bytes: &[u8],
        limits: &ArtifactLimits,
        what: &str,
    ) -> Result<PathBuf, CacheError> {
        let dir = self.root.join("trees/sha256");
        let tree = dir.join(digest.hex());
        if tree.is_dir() {
            return Ok(tree);
        }
        let io_error = |error| CacheError::Io {
            path: dir.clone(),
            error,
        };
        fs::create_dir_all(&dir).map_err(io_error)?;
        let scratch = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&dir)
            .map_err(io_error)?;
        archive::unpack(bytes, scratch.path(), limits).map_err(|error| CacheError::Archive {
            what: what.into(),
            error,
        })?;
        match fs::rename(scratch.path(), &tree) {
            Ok(()) => Ok(tree),
            // Another task unpacked the same blob first: theirs is as good.
            Err(_) if tree.is_dir() => Ok(tree),
            Err(error) => Err(io_error(error)),
        }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_verified_blobs_and_refuses_a_mismatch() {
        let state = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(state.path());
        let digest = Digest::of(b"chart");
        assert_eq!(cache.blob(&digest).unwrap(), None);
        let error = cache
            .store(b"tampered", &digest, "chart podinfo 1.0.0")
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("chart podinfo 1.0.0: digest mismatch"),
            "{error}"
        );
        assert_eq!(
            cache.blob(&digest).unwrap(),
            None,
            "a mismatch stores nothing"
        );
        cache.store(b"chart", &digest, "chart").unwrap();
        assert_eq!(cache.blob(&digest).unwrap().as_deref(), Some(&b"chart"[..]));
    }

    #[test]
    fn a_corrupted_blob_is_dropped_on_read() {
        let state = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(state.path());
        let digest = Digest::of(b"chart");
        cache.store(b"chart", &digest, "chart").unwrap();
        fs::write(cache.blob_path(&digest), b"bitrot").unwrap();
        assert_eq!(cache.blob(&digest).unwrap(), None);
        assert!(!cache.blob_path(&digest).exists());
    }

    #[test]
    fn trees_unpack_once_and_a_refused_archive_leaves_nothing() {
        let state = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(state.path());
        let source = tempfile::tempdir().unwrap();
        fs::write(source.path().join("cm.yaml"), "kind: ConfigMap\n").unwrap();
        let packed = archive::pack_dir(source.path()).unwrap();
        let digest = Digest::of(&packed);
        let limits = ArtifactLimits::default();
        let tree = cache.tree(&digest, &packed, &limits, "app").unwrap();
        assert_eq!(
            fs::read_to_string(tree.join("cm.yaml")).unwrap(),
            "kind: ConfigMap\n"
        );
        assert_eq!(
            cache
                .tree(&digest, b"ignored: cached", &limits, "app")
                .unwrap(),
            tree
        );

        let bad = archive::tests::tar_gz(&[("../escape.yaml", b"x")]);
        let error = cache
            .tree(&Digest::of(&bad), &bad, &limits, "app")
            .unwrap_err();
        assert!(error.to_string().contains("\"../escape.yaml\""), "{error}");
        let left: Vec<_> = fs::read_dir(state.path().join("artifacts/trees/sha256"))
            .unwrap()
            .collect();
        assert_eq!(left.len(), 1, "only the good tree remains");
    }
}
