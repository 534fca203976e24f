//! A kustomization whose files include SOPS files (resources, `secretGenerator`
//! `files` and `envs`) is built from a private copy with those files decrypted, as
//! Flux's kustomize-controller decrypts its sources before the build. The copy is
//! a 0700 temporary directory (decrypted files 0600) removed as soon as kustomize
//! has run; a root with SOPS files is never built in cached parts, so no plaintext
//! lands in the part cache, and the render key hashes the encrypted files.

use super::error::RenderError;
use super::inputs::Base;
use crate::manifest::Manifest;
use crate::sops::{self, AgeKeys, Format};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The files among `files` that are SOPS files (by their format and content).
pub(super) fn encrypted(files: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|file| Format::of(file).is_some())
        .filter(|file| std::fs::read_to_string(file).is_ok_and(|t| sops::may_be_encrypted(&t)))
        .cloned()
        .collect()
}

/// The private copy of a base's files, SOPS files decrypted; removed when dropped.
pub(super) struct Mirror {
    dir: tempfile::TempDir,
    canonical: PathBuf,
}

impl Mirror {
    /// Copies `files` (inside `base`) into a new 0700 directory, each SOPS file of
    /// `encrypted` written decrypted.
    pub(super) fn new(
        base: &Base,
        files: &BTreeSet<PathBuf>,
        encrypted: &[PathBuf],
        keys: &AgeKeys,
    ) -> Result<Mirror, RenderError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RenderError::Io { path, source }
        };
        let dir = tempfile::Builder::new()
            .prefix("converge-sops-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(io(Path::new("a private temporary directory")))?;
        let canonical = std::fs::canonicalize(dir.path()).map_err(io(dir.path()))?;
        for file in files {
            let Ok(relative) = file.strip_prefix(&base.canonical) else {
                continue;
            };
            let to = canonical.join(relative);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            if encrypted.contains(file) {
                let text = std::fs::read_to_string(file).map_err(io(file))?;
                let plain = sops::decrypt(&base.spell(file), &text, keys)?
                    .map(|d| zeroize::Zeroizing::new(d.text()))
                    .unwrap_or_else(|| zeroize::Zeroizing::new(text));
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&to)
                    .map_err(io(&to))?;
                out.write_all(plain.as_bytes()).map_err(io(&to))?;
            } else {
                std::fs::copy(file, &to).map_err(io(file))?;
            }
        }
        Ok(Mirror { dir, canonical })
    }

    /// `path` (inside the base) in the copy.
    pub(super) fn path_of(&self, base: &Base, path: &Path) -> PathBuf {
        match path.strip_prefix(&base.canonical) {
            Ok(relative) => self.canonical.join(relative),
            Err(_) => path.to_path_buf(),
        }
    }

    /// Origins in the copy made origins in the base again.
    pub(super) fn restore_origins(&self, base: &Base, manifests: &mut [Manifest]) {
        for manifest in manifests {
            if let Ok(relative) = manifest.origin.file.strip_prefix(&self.canonical) {
                manifest.origin.file = base.spell(&base.canonical.join(relative));
            }
        }
    }

    /// A tool's message about the copy, naming the base's files instead.
    pub(super) fn unmirror(&self, base: &Base, message: &str) -> String {
        message.replace(
            &self.canonical.display().to_string(),
            &base.canonical.display().to_string(),
        )
    }

    /// Removes the copy now, reporting nothing: a failure leaves it to the drop.
    pub(super) fn remove(self) {
        let _ = self.dir.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_private_and_removed() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.yaml"), "a: 1\n").unwrap();
        let base = Base::new(src.path()).unwrap();
        let files: BTreeSet<PathBuf> = [base.canonical.join("a.yaml")].into();
        let mirror = Mirror::new(&base, &files, &[], &AgeKeys::default()).unwrap();
        let mode = std::fs::metadata(&mirror.canonical)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let copied = mirror.path_of(&base, &base.canonical.join("a.yaml"));
        assert_eq!(std::fs::read_to_string(&copied).unwrap(), "a: 1\n");
        let dir = mirror.canonical.clone();
        mirror.remove();
        assert!(!dir.exists());
    }
}
