//! Tar archives (optionally gzip-compressed), unpacked confined to one directory and
//! packed reproducibly.
//!
//! An artifact comes from a registry that someone else controls, so unpacking trusts
//! nothing in it: an absolute path, a `..` component, a link leading outside (or an
//! entry written through a link), a hard link, a device node or more bytes than
//! `[limits]` allows each stop the unpacking at that entry, named in the error. The
//! caller unpacks into a fresh directory and drops it on error, so a refused archive
//! leaves nothing behind.

use crate::config::ArtifactLimits;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use tar::{EntryType, Header};

/// Why an archive was refused or could not be written out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArchiveError {
    #[error(
        "archive entry {entry:?} has an absolute path; an artifact may hold only relative paths"
    )]
    AbsolutePath { entry: String },
    #[error("archive entry {entry:?} leads outside the artifact (a `..` component)")]
    ParentDir { entry: String },
    #[error("archive entry {entry:?} is a link to {target:?}, which leads outside the artifact")]
    LinkOutside { entry: String, target: String },
    #[error(
        "archive entry {entry:?} lies below the link {link:?}; entries may not be written through links"
    )]
    ThroughLink { entry: String, link: String },
    #[error(
        "archive entry {entry:?} is a {kind}; an artifact may hold only files, directories and \
         symbolic links"
    )]
    Unsupported { entry: String, kind: String },
    #[error(
        "archive unpacks to more than {limit_mib} MiB (reached at entry {entry:?}); if the \
         artifact is genuine, raise [limits] max_unpacked_mib"
    )]
    TooLarge { entry: String, limit_mib: u64 },
    #[error("archive holds more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("archive is not a valid tar or tar+gzip stream: {detail}")]
    Corrupt { detail: String },
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
}

/// The two leading bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Unpacks `bytes` (tar, or tar+gzip: told apart by gzip's magic number) into `dest`,
/// which must exist and should be empty.
pub(crate) fn unpack(
    bytes: &[u8],
    dest: &Path,
    limits: &ArtifactLimits,
) -> Result<(), ArchiveError> {
    // Headers and padding count too, so a stream of empty entries or a huge PAX
    // header cannot grow without bound either.
    let stream_cap = limits
        .max_unpacked_bytes
        .saturating_mul(2)
        .saturating_add(1 << 20);
    let reader: Box<dyn Read + '_> = match bytes.starts_with(&GZIP_MAGIC) {
        true => Box::new(GzDecoder::new(bytes)),
        false => Box::new(bytes),
    };
    let mut archive = tar::Archive::new(reader.take(stream_cap));
    let mut unpacker = Unpacker {
        dest,
        limits,
        written: 0,
        entries: 0,
    };
    let entries = archive.entries().map_err(corrupt)?;
    for entry in entries {
        unpacker.entry(entry.map_err(corrupt)?)?;
    }
    Ok(())
}

fn corrupt(error: io::Error) -> ArchiveError {
    ArchiveError::Corrupt {
        detail: error.to_string(),
    }
}

struct Unpacker<'a> {
    dest: &'a Path,
    limits: &'a ArtifactLimits,
    written: u64,
    entries: u64,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ArchiveError> {
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let relative = confined_path(&name)?;
        if relative.as_os_str().is_empty() {
            return Ok(());
        }
        self.refuse_links_above(&name, &relative)?;
        let path = self.dest.join(&relative);
        match kind {
            EntryType::Directory => create_dir(&path),
            EntryType::Regular | EntryType::Continuous => self.file(&name, &path, &mut entry),
            EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = String::from_utf8_lossy(&target).into_owned();
                link(&name, &relative, &target, &path)
            }
            other => Err(ArchiveError::Unsupported {
                entry: name,
                kind: kind_name(other).into(),
            }),
        }
    }

    fn file(
        &mut self,
        name: &str,
        path: &Path,
        content: &mut impl Read,
    ) -> Result<(), ArchiveError> {
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        remove_existing(path)?;
        let left = self.limits.max_unpacked_bytes - self.written;
        let mut file = fs::File::create_new(path).map_err(|error| write_error(path, error))?;
        let copied = io::copy(&mut content.take(left + 1), &mut file).map_err(corrupt)?;
        self.written += copied;
        if copied > left {
            return Err(ArchiveError::TooLarge {
                entry: name.into(),
                limit_mib: self.limits.max_unpacked_bytes >> 20,
            });
        }
        Ok(())
    }

    /// An entry may not be written through a link the archive made earlier: a link
    /// to `.` would otherwise let `d/..` reach the parent of `dest`.
    fn refuse_links_above(&self, name: &str, relative: &Path) -> Result<(), ArchiveError> {
        let mut at = self.dest.to_path_buf();
        let parents = relative.parent().into_iter().flat_map(Path::components);
        for component in parents {
            at.push(component);
            let is_link = fs::symlink_metadata(&at).is_ok_and(|meta| meta.file_type().is_symlink());
            if is_link {
                let link = at
                    .strip_prefix(self.dest)
                    .unwrap_or(&at)
                    .display()
                    .to_string();
                return Err(ArchiveError::ThroughLink {
                    entry: name.into(),
                    link,
                });
            }
        }
        Ok(())
    }
}

/// `name` as a relative path below the archive's root: no root, no prefix, no `..`.
fn confined_path(name: &str) -> Result<PathBuf, ArchiveError> {
    let mut relative = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(ArchiveError::ParentDir { entry: name.into() }),
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::AbsolutePath { entry: name.into() });
            }
        }
    }
    Ok(relative)
}

/// A symbolic link whose target, read from the link's own directory, stays inside.
fn link(name: &str, relative: &Path, target: &str, path: &Path) -> Result<(), ArchiveError> {
    link_stays_inside(name, relative, target)?;
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    remove_existing(path)?;
    symlink(target, path).map_err(|error| write_error(path, error))
}

/// Whether `target`, read from the directory of the link at `relative`, stays below
/// the archive's root (lexically: [`Unpacker::refuse_links_above`] makes sure no
/// link lies on the way).
fn link_stays_inside(name: &str, relative: &Path, target: &str) -> Result<(), ArchiveError> {
    let outside = || ArchiveError::LinkOutside {
        entry: name.into(),
        target: target.into(),
    };
    let mut depth = relative.components().count().saturating_sub(1);
    for component in Path::new(target).components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth = depth.checked_sub(1).ok_or_else(outside)?,
            Component::RootDir | Component::Prefix(_) => return Err(outside()),
        }
    }
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &str, path: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, path)
}

#[cfg(not(unix))]
fn symlink(_target: &str, _path: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symbolic links need a Unix system",
    ))
}

/// A later entry replaces an earlier one of the same name; a link is removed, never
/// followed.
fn remove_existing(path: &Path) -> Result<(), ArchiveError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
    .map_err(|error| write_error(path, error))
}

fn create_dir(path: &Path) -> Result<(), ArchiveError> {
    fs::create_dir_all(path).map_err(|error| write_error(path, error))
}

fn write_error(path: &Path, error: io::Error) -> ArchiveError {
    ArchiveError::Write {
        path: path.to_path_buf(),
        error,
    }
}

fn kind_name(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Link => "hard link",
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "named pipe",
        _ => "special entry",
    }
}

/// `dir` as a tar+gzip stream that depends only on its content: entries sorted by
/// name, times, owners and modes fixed (0644, 0755 for directories and executables),
/// `.git` left out. Links are kept when they stay inside `dir`.
pub(crate) fn pack_dir(dir: &Path) -> Result<Vec<u8>, ArchiveError> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    append_tree(&mut builder, dir, Path::new(""))?;
    let encoder = builder
        .into_inner()
        .map_err(|error| write_error(dir, error))?;
    encoder.finish().map_err(|error| write_error(dir, error))
}

fn append_tree(
    builder: &mut tar::Builder<GzEncoder<Vec<u8>>>,
    root: &Path,
    relative: &Path,
) -> Result<(), ArchiveError> {
    let dir = root.join(relative);
    let read_error = |error| ArchiveError::Read {
        path: dir.clone(),
        error,
    };
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(read_error)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    names.sort();
    for name in names.into_iter().filter(|name| name != ".git") {
        let entry = relative.join(&name);
        let path = root.join(&entry);
        let meta = fs::symlink_metadata(&path).map_err(|error| ArchiveError::Read {
            path: path.clone(),
            error,
        })?;
        let mut header = Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let name = entry.display().to_string();
        if meta.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            append(
                builder,
                &mut header,
                &format!("{name}/"),
                io::empty(),
                &path,
            )?;
            append_tree(builder, root, &entry)?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(|error| ArchiveError::Read {
                path: path.clone(),
                error,
            })?;
            let target = target.display().to_string();
            // The same rule `unpack` applies, so what is pushed can be pulled.
            link_stays_inside(&name, &entry, &target)?;
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, &name, &target)
                .map_err(|error| write_error(&path, error))?;
        } else {
            header.set_entry_type(EntryType::Regular);
            header.set_mode(if is_executable(&meta) { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let file = fs::File::open(&path).map_err(|error| ArchiveError::Read {
                path: path.clone(),
                error,
            })?;
            append(builder, &mut header, &name, file, &path)?;
        }
    }
    Ok(())
}

fn append(
    builder: &mut tar::Builder<GzEncoder<Vec<u8>>>,
    header: &mut Header,
    name: &str,
    content: impl Read,
    path: &Path,
) -> Result<(), ArchiveError> {
    builder
        .append_data(header, name, content)
        .map_err(|error| write_error(path, error))
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

#[cfg(test)]
pub(super) mod tests;
