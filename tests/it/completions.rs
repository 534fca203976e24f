//! `converge completions bash|zsh|fish` and `converge man`: generated from the
//! clap definitions, checked for structure (bash parses them and completes a
//! subcommand and a flag; zsh's and fish's name every subcommand; the man pages
//! have their sections and one page per command). No control plane needed.

use crate::common::describe;
use std::process::{Command, Output};

const SUBCOMMANDS: [&str; 8] = [
    "apply",
    "diff",
    "run",
    "status",
    "version",
    "get",
    "completions",
    "man",
];

fn converge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(args)
        .output()
        .expect("run converge")
}

fn stdout(args: &[&str]) -> String {
    let out = converge(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// What bash offers for `words` (the last one being completed).
fn bash_complete(script: &std::path::Path, words: &str) -> String {
    let program = format!(
        "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
         COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
         _converge converge \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .expect("run bash");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bash_completion_parses_and_completes_subcommands_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("converge.bash");
    std::fs::write(&script, stdout(&["completions", "bash"])).expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash -n");
    assert_eq!(
        check.status.code(),
        Some(0),
        "bash -n: {}",
        describe(&check)
    );
    let offered = bash_complete(&script, "converge d");
    assert_eq!(offered.trim(), "diff", "{offered}");
    let offered = bash_complete(&script, "converge diff --ba");
    assert_eq!(offered.trim(), "--base", "{offered}");
    let offered = bash_complete(&script, "converge get ''");
    for what in ["sources", "objects"] {
        assert!(offered.lines().any(|l| l == what), "{what}: {offered}");
    }
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    let zsh = stdout(&["completions", "zsh"]);
    assert!(
        zsh.starts_with("#compdef converge\n"),
        "{}",
        &zsh[..80.min(zsh.len())]
    );
    let fish = stdout(&["completions", "fish"]);
    for sub in SUBCOMMANDS {
        assert!(zsh.contains(&format!("'{sub}:")), "zsh lacks {sub}");
        assert!(fish.contains(&format!("-a \"{sub}\"")), "fish lacks {sub}");
    }
    assert!(fish.contains("complete -c converge"), "{fish}");
    assert!(fish.contains("-l base"), "fish lacks diff --base");
    let out = converge(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn the_man_page_has_its_sections_and_one_page_per_command() {
    let page = stdout(&["man"]);
    assert!(page.contains(".TH converge 1 "), "{page}");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
        ".SH VERSION",
    ] {
        assert!(page.contains(section), "{section} missing:\n{page}");
    }
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("converge\\-{sub}(1)")),
            "{sub} not listed:\n{page}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("man");
    let out = converge(&["man", "--out-dir", out_dir.to_str().expect("UTF-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for sub in SUBCOMMANDS {
        let file = out_dir.join(format!("converge-{sub}.1"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!(".TH converge-{sub} 1 ")),
            "{}",
            file.display()
        );
    }
    let diff = std::fs::read_to_string(out_dir.join("converge-diff.1")).expect("diff page");
    for flag in ["\\-\\-git", "\\-\\-base", "\\-\\-max\\-bytes"] {
        assert!(diff.contains(flag), "{flag} missing from converge-diff(1)");
    }
    assert!(
        diff.contains(".SH EXTRA") || diff.contains("Examples:"),
        "examples missing"
    );
}
