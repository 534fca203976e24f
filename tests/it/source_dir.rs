//! Directory sources with the real inotify watcher: a change must reach the daemon
//! within a second, ConfigMap-style symlink swaps count, editor droppings do not.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::Manifests;
use converge::config::Config;
use converge::source::{Source, WatchHandle};
use tokio::sync::mpsc;

/// The acceptance bound: a file written into a directory source is applied within 1 s.
const WITHIN: Duration = Duration::from_secs(1);

fn dir_source(dir: &Path) -> Source {
    let config_dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[[source]]\nname = \"local\"\ndir = {:?}\n",
        dir.display().to_string()
    );
    let config = Config::parse(&text, &config_dir.path().join("config.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    Source::new(&config.sources[0], &config.state_dir).expect("source")
}

fn watch(source: &Source) -> (WatchHandle, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel(16);
    (source.watch(tx).expect("watch"), rx)
}

/// The next notification, if one comes within `wait`.
async fn next(rx: &mut mpsc::Receiver<String>, wait: Duration) -> Option<String> {
    tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
}

#[tokio::test]
async fn fetch_gives_a_stable_content_revision() {
    let tmp = Manifests::new();
    tmp.write("a.yaml", "kind: A\n");
    let source = dir_source(tmp.path());
    let first = source.fetch().await.expect("fetch");
    assert!(first.revision.starts_with("dir:"), "{}", first.revision);
    assert_eq!(first.root, tmp.path());
    assert_eq!(
        source.fetch().await.expect("fetch").revision,
        first.revision
    );
    tmp.write("a.yaml", "kind: B\n");
    assert_ne!(
        source.fetch().await.expect("fetch").revision,
        first.revision
    );
}

#[tokio::test]
async fn a_written_file_is_reported_within_a_second() {
    let tmp = Manifests::new();
    tmp.write("a.yaml", "kind: A\n");
    let source = dir_source(tmp.path());
    let (_handle, mut rx) = watch(&source);
    let started = Instant::now();
    tmp.write("sub/b.yaml", "kind: B\n");
    assert_eq!(next(&mut rx, WITHIN).await.as_deref(), Some("local"));
    assert!(started.elapsed() < WITHIN, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_burst_of_writes_is_one_notification() {
    let tmp = Manifests::new();
    let source = dir_source(tmp.path());
    let (_handle, mut rx) = watch(&source);
    for i in 0..5 {
        tmp.write(&format!("f{i}.yaml"), "kind: X\n");
    }
    assert_eq!(next(&mut rx, WITHIN).await.as_deref(), Some("local"));
    assert_eq!(next(&mut rx, Duration::from_millis(500)).await, None);
}

/// How the kubelet updates a ConfigMap volume: a new timestamped directory, a
/// `..data_tmp` symlink to it renamed over `..data`, then the old directory removed.
#[tokio::test]
async fn a_configmap_style_symlink_swap_is_reported() {
    let tmp = Manifests::new();
    let dir = tmp.path();
    tmp.write("..2024_01_01_00_00_00.1/app.yaml", "kind: A\n");
    symlink("..2024_01_01_00_00_00.1", dir.join("..data")).unwrap();
    symlink("..data/app.yaml", dir.join("app.yaml")).unwrap();
    let source = dir_source(dir);
    let before = source.fetch().await.expect("fetch").revision;
    let (_handle, mut rx) = watch(&source);

    tmp.write("..2024_01_01_00_05_00.2/app.yaml", "kind: B\n");
    symlink("..2024_01_01_00_05_00.2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2024_01_01_00_00_00.1")).unwrap();

    assert_eq!(next(&mut rx, WITHIN).await.as_deref(), Some("local"));
    let after = source.fetch().await.expect("fetch");
    assert_ne!(after.revision, before);
    assert_eq!(
        std::fs::read_to_string(after.root.join("app.yaml")).unwrap(),
        "kind: B\n"
    );
}

#[tokio::test]
async fn editor_temp_and_hidden_files_are_ignored() {
    let tmp = Manifests::new();
    tmp.write("a.yaml", "kind: A\n");
    let source = dir_source(tmp.path());
    let (_handle, mut rx) = watch(&source);
    for name in [
        ".a.yaml.swp",
        "a.yaml~",
        ".#a.yaml",
        "4913",
        ".hidden.yaml",
        "notes.txt",
    ] {
        tmp.write(name, "scratch");
    }
    tmp.remove("4913");
    assert_eq!(next(&mut rx, WITHIN).await, None, "no manifest changed");
    // The watch is still alive: a real change after the noise is reported.
    tmp.write("a.yaml", "kind: Changed\n");
    assert_eq!(next(&mut rx, WITHIN).await.as_deref(), Some("local"));
}

#[tokio::test]
async fn dropping_the_handle_stops_the_watch() {
    let tmp = Manifests::new();
    let source = dir_source(tmp.path());
    let (handle, mut rx) = watch(&source);
    drop(handle);
    tmp.write("a.yaml", "kind: A\n");
    // The sender went with the watcher: the channel closes, nothing is sent.
    let got = tokio::time::timeout(WITHIN, rx.recv())
        .await
        .expect("channel closes");
    assert_eq!(got, None);
}

/// Hashing the directory opens every file; the watcher must not take its own (or
/// anyone's) reads for changes, or it would wake itself forever.
#[tokio::test]
async fn reading_files_is_not_a_change() {
    let tmp = Manifests::new();
    tmp.write("a.yaml", "kind: A\n");
    let source = dir_source(tmp.path());
    let (_handle, mut rx) = watch(&source);
    for _ in 0..3 {
        source.fetch().await.expect("fetch");
        std::fs::read(tmp.path().join("a.yaml")).unwrap();
    }
    assert_eq!(next(&mut rx, Duration::from_millis(600)).await, None);
}
