use super::*;

/// A tar+gzip stream of regular files, names written raw (the tar crate's own path
/// setters refuse the hostile names these tests need).
pub(crate) fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<_> = files
        .iter()
        .map(|(name, data)| (*name, EntryType::Regular, "", *data))
        .collect();
    raw_tar_gz(&entries)
}

fn raw_tar_gz(entries: &[(&str, EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, kind, target, data) in entries {
        let mut header = Header::new_gnu();
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        raw.linkname[..target.len()].copy_from_slice(target.as_bytes());
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn unpack_into(
    bytes: &[u8],
    limits: &ArtifactLimits,
) -> (tempfile::TempDir, Result<(), ArchiveError>) {
    let dest = tempfile::tempdir().unwrap();
    let result = unpack(bytes, dest.path(), limits);
    (dest, result)
}

fn refused(entries: &[(&str, EntryType, &str, &[u8])]) -> String {
    let (_dest, result) = unpack_into(&raw_tar_gz(entries), &ArtifactLimits::default());
    result.unwrap_err().to_string()
}

#[test]
fn unpacks_files_and_directories_from_tar_and_tar_gz() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("base/sub")).unwrap();
    fs::write(dir.path().join("base/sub/cm.yaml"), "kind: ConfigMap\n").unwrap();
    fs::write(
        dir.path().join("kustomization.yaml"),
        "resources: [base/sub/cm.yaml]\n",
    )
    .unwrap();
    let packed = pack_dir(dir.path()).unwrap();
    let (dest, result) = unpack_into(&packed, &ArtifactLimits::default());
    result.unwrap();
    assert_eq!(
        fs::read_to_string(dest.path().join("base/sub/cm.yaml")).unwrap(),
        "kind: ConfigMap\n"
    );

    let mut plain = Vec::new();
    GzDecoder::new(&packed[..]).read_to_end(&mut plain).unwrap();
    let (dest, result) = unpack_into(&plain, &ArtifactLimits::default());
    result.unwrap();
    assert!(dest.path().join("kustomization.yaml").is_file());
}

#[test]
fn packing_depends_only_on_content() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    for dir in [&one, &two] {
        fs::create_dir(dir.path().join(".git")).unwrap();
        fs::write(
            dir.path().join(".git/HEAD"),
            dir.path().display().to_string(),
        )
        .unwrap();
        fs::write(dir.path().join("b.yaml"), "b").unwrap();
        fs::write(dir.path().join("a.yaml"), "a").unwrap();
    }
    let packed = pack_dir(one.path()).unwrap();
    assert_eq!(packed, pack_dir(two.path()).unwrap());
    let mut archive = tar::Archive::new(GzDecoder::new(&packed[..]));
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|entry| entry.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        ["a.yaml", "b.yaml"],
        ".git is left out, names sorted"
    );
}

#[test]
fn refuses_absolute_paths_and_parent_components_naming_the_entry() {
    let error = refused(&[("/etc/passwd", EntryType::Regular, "", b"x")]);
    assert!(
        error.contains("\"/etc/passwd\" has an absolute path"),
        "{error}"
    );
    let error = refused(&[("app/../../escape", EntryType::Regular, "", b"x")]);
    assert!(
        error.contains("\"app/../../escape\" leads outside"),
        "{error}"
    );
}

#[test]
fn refuses_links_leading_outside_and_writes_through_links() {
    let error = refused(&[("app/link", EntryType::Symlink, "../../etc", b"")]);
    assert!(
        error.contains("\"app/link\" is a link to \"../../etc\""),
        "{error}"
    );
    let error = refused(&[("link", EntryType::Symlink, "/etc", b"")]);
    assert!(error.contains("leads outside"), "{error}");
    // A link to `.` is inside, but `dot/..` through it would not be.
    let error = refused(&[
        ("dot", EntryType::Symlink, ".", b""),
        ("dot/up", EntryType::Symlink, "..", b""),
    ]);
    assert!(
        error.contains("\"dot/up\" lies below the link \"dot\""),
        "{error}"
    );
    let error = refused(&[("hard", EntryType::Link, "other", b"")]);
    assert!(error.contains("\"hard\" is a hard link"), "{error}");
}

#[test]
fn keeps_links_that_stay_inside() {
    let bytes = raw_tar_gz(&[
        ("base/cm.yaml", EntryType::Regular, "", b"kind: ConfigMap\n"),
        (
            "overlay/cm.yaml",
            EntryType::Symlink,
            "../base/cm.yaml",
            b"",
        ),
    ]);
    let (dest, result) = unpack_into(&bytes, &ArtifactLimits::default());
    result.unwrap();
    assert_eq!(
        fs::read_to_string(dest.path().join("overlay/cm.yaml")).unwrap(),
        "kind: ConfigMap\n"
    );
}

#[test]
fn stops_a_decompression_bomb_at_the_limit() {
    let zeros = vec![0u8; 3 << 20];
    let bytes = tar_gz(&[("small.yaml", b"a"), ("bomb.yaml", &zeros)]);
    assert!(bytes.len() < 64 << 10, "the bomb is small when compressed");
    let limits = ArtifactLimits {
        max_unpacked_bytes: 1 << 20,
        ..ArtifactLimits::default()
    };
    let (dest, result) = unpack_into(&bytes, &limits);
    let error = result.unwrap_err().to_string();
    assert!(
        error.contains("more than 1 MiB (reached at entry \"bomb.yaml\")"),
        "{error}"
    );
    let written = fs::metadata(dest.path().join("bomb.yaml")).unwrap().len();
    assert!(
        written <= (1 << 20) + 1,
        "stopped at the limit, wrote {written}"
    );
}

#[test]
fn counts_entries() {
    let limits = ArtifactLimits {
        max_entries: 2,
        ..ArtifactLimits::default()
    };
    let bytes = tar_gz(&[("a", b""), ("b", b""), ("c", b"")]);
    let (_dest, result) = unpack_into(&bytes, &limits);
    assert_eq!(
        result.unwrap_err().to_string(),
        "archive holds more than 2 entries"
    );
}

#[test]
fn garbage_is_corrupt() {
    let (_dest, result) = unpack_into(&[0x1f, 0x8b, 1, 2, 3], &ArtifactLimits::default());
    assert!(
        matches!(result, Err(ArchiveError::Corrupt { .. })),
        "{result:?}"
    );
}
