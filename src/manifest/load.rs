//! Reading manifest files: the paths given, directories walked in a stable order.

use super::error::problem;
use super::parse::{Parsed, parse_into};
use super::walk::files;
use super::{Limits, Manifest, ManifestError, Problem};
use crate::sops::{self, AgeKeys};
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Loads every manifest under `paths` (files or directories), in file order and then
/// document order, or reports every problem found in all of them.
///
/// Directories are walked as [`files`] says: recursively in name order so the result
/// is deterministic, `.yaml`, `.yml` and `.json` files only, hidden entries skipped,
/// and symlinks followed only inside the directory. A file named explicitly is read
/// whatever its extension: the user asked for it.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Manifest>, ManifestError> {
    load_with(paths, Limits::default())
}

/// [`load`] within `limits` instead of the defaults.
pub fn load_with(paths: &[PathBuf], limits: Limits) -> Result<Vec<Manifest>, ManifestError> {
    load_decrypting(paths, limits, &AgeKeys::default())
}

/// [`load_with`], SOPS files decrypted with `keys` (in memory) before they are parsed.
pub fn load_decrypting(
    paths: &[PathBuf],
    limits: Limits,
    keys: &AgeKeys,
) -> Result<Vec<Manifest>, ManifestError> {
    let mut parsed = Parsed::within(limits);
    for file in files(paths)? {
        let bytes = read(&file, limits.max_file_bytes)?;
        if let Some(text) = decode_text(&file, bytes, limits.max_file_bytes, &mut parsed.problems) {
            if let Some(text) = decrypted(&file, text, keys, &mut parsed.problems) {
                parse_into(&text, &file, &mut parsed);
            }
        }
    }
    parsed.finish()
}

/// The text to parse: a SOPS file's plaintext (its documents as JSON, one a line),
/// any other file as it is. A SOPS file that cannot be decrypted is a problem in
/// the file, never sent as it is: the API server would store the ciphertext.
pub(super) fn decrypted(
    file: &Path,
    text: String,
    keys: &AgeKeys,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    if !sops::may_be_encrypted(&text) {
        return Some(text);
    }
    match sops::decrypt(file, &text, keys) {
        Ok(Some(plain)) => Some(plain.text()),
        Ok(None) => Some(text),
        Err(error) => {
            let message = format!("SOPS: {}", error.failure);
            problems.push(problem(file, 1, None, message));
            None
        }
    }
}

/// A file's bytes, at most one more than `max_bytes` ([`super::MAX_FILE_BYTES`] by default): a
/// bigger file is refused by [`decode_text`] without being read whole.
pub(super) fn read(file: &Path, max_bytes: u64) -> Result<Vec<u8>, ManifestError> {
    let io_error = |source| ManifestError::Io {
        path: file.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    let opened = fs::File::open(file).map_err(io_error)?;
    opened
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    Ok(bytes)
}

/// Reads a file as text, as kubectl does: UTF-8, or UTF-16 after its byte order mark.
/// Bytes that are not UTF-8 and a file over `max_bytes` are problems in the
/// file (reported with their line), not I/O failures, so other files are still checked.
/// (kubectl would turn bytes that are not UTF-8 into U+FFFD and carry on; converge
/// refuses rather than send changed text.)
pub(super) fn decode_text(
    file: &Path,
    bytes: Vec<u8>,
    max_bytes: u64,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    if bytes.len() as u64 > max_bytes {
        let message = format!(
            "the file is larger than {} MiB, the most converge reads from one file; split it, \
             or raise [limits] max_file_mib (--max-file-mib)",
            max_bytes.div_ceil(1 << 20)
        );
        problems.push(problem(file, 1, None, message));
        return None;
    }
    if let Some(text) = utf16(&bytes) {
        return text.or_else(|| {
            let message = "the file is not valid UTF-16; save it as UTF-8".to_string();
            problems.push(problem(file, 1, None, message));
            None
        });
    }
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(err) => {
            let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
            let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
            let message = "the file is not valid UTF-8; save it as UTF-8".to_string();
            problems.push(problem(file, line, None, message));
            None
        }
    }
}

/// The text of a file that starts with a UTF-16 byte order mark (`None` inside when
/// it is not valid UTF-16), or `None` for any other file.
fn utf16(bytes: &[u8]) -> Option<Option<String>> {
    type Unit = fn([u8; 2]) -> u16;
    let (rest, from): (&[u8], Unit) = match bytes {
        [0xff, 0xfe, rest @ ..] => (rest, u16::from_le_bytes),
        [0xfe, 0xff, rest @ ..] => (rest, u16::from_be_bytes),
        _ => return None,
    };
    if rest.len() % 2 != 0 {
        return Some(None);
    }
    let units: Vec<u16> = rest.chunks_exact(2).map(|c| from([c[0], c[1]])).collect();
    Some(String::from_utf16(&units).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_support::*;

    fn write(dir: &Path, relative: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, text).unwrap();
        path
    }

    fn cm(name: &str) -> String {
        format!("{CM}{name}\n")
    }

    #[test]
    fn directory_walk_is_sorted_and_skips_hidden_and_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "b.yml", cm("b"));
        write(
            dir,
            "a/z.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"z"}}"#,
        );
        // Not `y`: a plain y is `true` for kubectl, not a name.
        write(dir, "a/y.YAML", cm("why"));
        write(dir, "c.yaml", format!("{}---\n{}", cm("c1"), cm("c2")));
        write(dir, ".hidden/h.yaml", cm("hidden"));
        write(dir, "..data/d.yaml", cm("data"));
        write(dir, ".dot.yaml", cm("dot"));
        write(dir, "notes.txt", "not: a manifest");
        write(dir, "kustomize/README.md", "# not yaml");
        let manifests = load(&[dir.to_path_buf()]).unwrap();
        assert_eq!(names(&manifests), ["why", "z", "b", "c1", "c2"]);
        assert_eq!(manifests[0].origin.file, dir.join("a/y.YAML"));
        assert_eq!(manifests[4].origin.line, 6);
    }

    /// A ConfigMap volume: `x.yaml -> ..data/x.yaml`, `..data -> ..2024_01_01…`.
    #[cfg(unix)]
    #[test]
    fn configmap_mount_symlinks_are_followed_once() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "..2024_01_01/x.yaml", cm("x"));
        symlink("..2024_01_01", dir.join("..data")).unwrap();
        symlink("..data/x.yaml", dir.join("x.yaml")).unwrap();
        let manifests = load(&[dir.to_path_buf()]).unwrap();
        assert_eq!(names(&manifests), ["x"]);
        assert_eq!(manifests[0].origin.file, dir.join("x.yaml"));
    }

    /// The walk's refusals (see `walk`'s tests) stop the load: nothing is parsed.
    #[cfg(unix)]
    #[test]
    fn a_link_leading_outside_stops_the_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("manifests");
        write(&dir, "a.yaml", cm("a"));
        let outside = write(tmp.path(), "outside.yaml", cm("outside"));
        std::os::unix::fs::symlink(&outside, dir.join("evil.yaml")).unwrap();
        let err = load(std::slice::from_ref(&dir)).unwrap_err();
        assert!(matches!(err, ManifestError::Link(_)), "{err:?}");
        let text = err.to_string();
        let link = format!(
            "{} -> {}",
            dir.join("evil.yaml").display(),
            outside.display()
        );
        assert!(text.starts_with(&link), "{text}");
        assert!(err.problems().is_empty());
    }

    #[test]
    fn explicit_file_of_any_extension_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let txt = write(tmp.path(), "objects.txt", cm("t"));
        let hidden = write(tmp.path(), ".hidden.yaml", cm("h"));
        let manifests = load(&[txt, hidden]).unwrap();
        assert_eq!(names(&manifests), ["t", "h"]);
    }

    #[test]
    fn a_file_named_twice_is_read_once() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(tmp.path(), "a.yaml", cm("a"));
        let manifests = load(&[tmp.path().to_path_buf(), file]).unwrap();
        assert_eq!(names(&manifests), ["a"]);
    }

    #[test]
    fn missing_path_is_an_error_naming_it() {
        let missing = PathBuf::from("no/such/manifests");
        let err = load(&[missing]).unwrap_err();
        assert!(matches!(err, ManifestError::Io { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot read no/such/manifests: "),
            "{err}"
        );
    }

    #[test]
    fn utf16_files_are_read_as_kubectl_reads_them() {
        let tmp = tempfile::tempdir().unwrap();
        let le: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(cm("wide").encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = [0xfe, 0xff]
            .into_iter()
            .chain(cm("big").encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        let a = write(tmp.path(), "a.yaml", le);
        let b = write(tmp.path(), "b.yaml", be);
        assert_eq!(names(&load(&[a, b]).unwrap()), ["wide", "big"]);
        let odd = write(tmp.path(), "odd.yaml", [0xff, 0xfe, 0x61]);
        let err = load(&[odd]).unwrap_err();
        let expected = "odd.yaml:1: the file is not valid UTF-16; save it as UTF-8";
        assert!(err.to_string().ends_with(expected), "{err}");
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let big = write(tmp.path(), "big.yaml", "");
        let file = fs::OpenOptions::new().write(true).open(&big).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let err = load(&[big]).unwrap_err();
        let expected = "big.yaml:1: the file is larger than 16 MiB, the most converge reads from one file; \
             split it, or raise [limits] max_file_mib (--max-file-mib)";
        assert!(err.to_string().ends_with(expected), "{err}");
    }

    #[test]
    fn configured_limits_replace_the_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let nested = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata: {{a: {}}}\n",
            "[".repeat(10) + &"]".repeat(10)
        );
        let file = write(tmp.path(), "nested.yaml", nested);
        let shallow = Limits {
            max_depth: 5,
            ..Limits::default()
        };
        let err = load_with(std::slice::from_ref(&file), shallow).unwrap_err();
        assert!(err.to_string().contains("nested.yaml:4: "), "{err}");
        let small = Limits {
            max_file_bytes: 16,
            ..Limits::default()
        };
        let err = load_with(std::slice::from_ref(&file), small).unwrap_err();
        assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
        let mut cache = crate::manifest::FileCache::within(shallow);
        assert!(cache.refresh(std::slice::from_ref(&file)).is_err());
        assert!(load(&[file]).is_ok(), "within the default depth");
    }

    #[test]
    fn errors_across_files_are_all_collected() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(
            tmp.path(),
            "a.yaml",
            format!("{}---\nkind: Secret\n", cm("x")),
        );
        let b = write(tmp.path(), "b.yaml", "apiVersion: v1\nkind: [\n");
        let c = write(tmp.path(), "c.yaml", format!("# c\n{}", cm("x")));
        write(tmp.path(), "d.yaml", [0x61, 0x0a, 0xff, 0x0a]);
        let err = load(&[tmp.path().to_path_buf()]).unwrap_err();
        let found: Vec<String> = err.problems().iter().map(Problem::to_string).collect();
        assert_eq!(found.len(), 5, "{err}");
        let (a, b, c) = (a.display(), b.display(), c.display());
        assert!(found[0].starts_with(&format!("{a}:6: Secret: apiVersion is missing")));
        assert!(found[1].starts_with(&format!("{a}:6: Secret: metadata.name is missing")));
        assert!(
            found[2].starts_with(&format!("{b}:3: invalid YAML: ")),
            "{err}"
        );
        assert!(found[3].ends_with("d.yaml:2: the file is not valid UTF-8; save it as UTF-8"));
        assert_eq!(
            found[4],
            format!(
                "{c}:2: ConfigMap/x: duplicate object, also defined at {a}:1; keep only one of them"
            )
        );
        assert_eq!(err.to_string().lines().count(), 5, "one problem per line");
    }
}
