use super::*;
use crate::config::notify::*;
use crate::engine::{ClusterScoped, DriftRules, Recreate, Tenancy};
use std::fs;

/// A config directory with a manifests dir, an SSH key, known_hosts and a
/// kubeconfig, and an environment where only `GIT_TOKEN` and `HOOK` are set.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("manifests")).unwrap();
        fs::create_dir_all(dir.path().join("home/.kube")).unwrap();
        fs::write(dir.path().join("home/.kube/config"), "apiVersion: v1\n").unwrap();
        fs::write(dir.path().join("id_ed25519"), "key").unwrap();
        fs::write(dir.path().join("known_hosts"), "").unwrap();
        Fixture { dir }
    }

    fn env(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| match name {
            "HOME" => Some(self.dir.path().join("home").display().to_string()),
            "GIT_TOKEN" => Some("s3cret".into()),
            "HOOK" => Some("hook".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigFileError> {
        let path = self.dir.path().join("config.toml");
        Config::parse_with_env(text, &path, &self.env())
    }

    /// The problems of an invalid config (panics on anything else).
    fn problems(&self, text: &str) -> Vec<String> {
        match self.parse(text) {
            Err(ConfigFileError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// The single problem of an invalid config.
    fn problem(&self, text: &str) -> String {
        let problems = self.problems(text);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        problems.into_iter().next().unwrap()
    }
}

const DIR: &str = "[[source]]\nname = \"app\"\ndir = \"manifests\"\n";
const GIT: &str = "[[source]]\nname = \"shop\"\ngit = \"https://example.com/org/shop.git\"\n";

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{text:?} does not contain {part:?}");
    }
}

#[test]
fn minimal_dir_source_gets_every_default() {
    let fx = Fixture::new();
    let config = fx.parse(DIR).unwrap();
    assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(config.cluster, ClusterSettings::default());
    assert_eq!(
        config.state_dir,
        fx.dir.path().join("home/.local/state/converge")
    );
    let source = &config.sources[0];
    assert_eq!(source.name, "app");
    assert_eq!(
        source.kind,
        SourceLocation::Dir {
            path: fx.dir.path().join("manifests")
        }
    );
    assert_eq!(source.interval, Duration::from_secs(30));
    assert_eq!(source.full_resync_every, DEFAULT_FULL_RESYNC_EVERY);
    assert_eq!(source.namespace, "default");
    assert!(source.prune && source.self_heal && !source.allow_mass_prune);
    assert_eq!(
        source.drift,
        DriftRules::default(),
        "the kubectl family, no rules"
    );
    assert_eq!(source.wave_timeout, Duration::from_secs(300));
    assert!(source.depends_on.is_empty());
}

/// A dir source called `name` with `extra` keys.
fn dir_source(name: &str, extra: &str) -> String {
    format!("[[source]]\nname = \"{name}\"\ndir = \"manifests\"\n{extra}")
}

#[test]
fn dependencies_and_wave_timeouts_are_read() {
    let fx = Fixture::new();
    let text = dir_source("infra", "")
        + &dir_source("app", "depends_on = [\"infra\"]\nwave_timeout = \"90s\"\n");
    let config = fx.parse(&text).unwrap();
    let app = config.source("app").unwrap();
    assert_eq!(app.depends_on, ["infra"]);
    assert_eq!(app.wave_timeout, Duration::from_secs(90));
    let bad = fx.problem(&dir_source("app", "wave_timeout = 30\n"));
    assert_contains(&bad, &["wave_timeout = 30: not a duration string"]);
}

#[test]
fn sources_act_as_service_accounts_within_their_namespaces() {
    let fx = Fixture::new();
    let text = dir_source(
        "team",
        "namespace = \"team-a\"\nservice_account = \"team-a/deployer\"\n\
         allowed_namespaces = [\"team-a\", \"team-a-*\"]\n",
    ) + "[tenancy]\ndefault_service_account = \"gitops\"\n"
        + &dir_source("other", "namespace = \"team-b\"\n");
    let config = fx.parse(&text).unwrap();
    let team = config.source("team").unwrap();
    let acting = team.acting_as.as_ref().map(|a| a.user.as_str());
    assert_eq!(acting, Some("system:serviceaccount:team-a:deployer"));
    assert_eq!(team.tenancy.cluster_scoped, ClusterScoped::Refused);
    assert!(team.tenancy.allows_namespace("team-a-dev"));
    assert!(!team.tenancy.allows_namespace("team-b"));
    let other = config.source("other").unwrap();
    let acting = other.acting_as.as_ref().map(|a| a.user.as_str());
    assert_eq!(
        acting,
        Some("system:serviceaccount:team-b:gitops"),
        "the default, in the source's own namespace"
    );
    assert!(other.tenancy.allows_namespace("anything"));
    let open = fx.parse(DIR).unwrap();
    assert_eq!(open.sources[0].acting_as, None);
    assert_eq!(open.sources[0].tenancy, Tenancy::default());
}

#[test]
fn tenancy_settings_are_checked() {
    let fx = Fixture::new();
    let bad = fx.problem(&dir_source("app", "service_account = \"deployer\"\n"));
    assert_contains(
        &bad,
        &["service_account = \"deployer\": write NAMESPACE/NAME"],
    );
    let outside = fx.problem(&dir_source(
        "app",
        "namespace = \"web\"\nallowed_namespaces = [\"team-*\"]\n",
    ));
    assert_contains(
        &outside,
        &["namespace = \"web\" is not among its allowed_namespaces"],
    );
    let reads = fx.problem(
        &(dir_source("infra", "namespace = \"ops\"\n")
            + &dir_source(
                "app",
                "namespace = \"team\"\nallowed_namespaces = [\"team\"]\n\
                 depends_on = [\"infra\"]\n",
            )),
    );
    assert_contains(
        &reads,
        &["depends_on \"infra\": that source is in namespace \"ops\""],
    );
}

#[test]
fn dependencies_must_exist_and_never_form_a_cycle() {
    let fx = Fixture::new();
    let unknown = fx.problem(&dir_source("app", "depends_on = [\"infra\"]\n"));
    assert_contains(
        &unknown,
        &["source \"app\": depends_on: no source is called \"infra\""],
    );
    let itself = fx.problem(&dir_source("app", "depends_on = [\"app\"]\n"));
    assert_contains(&itself, &["\"app\" is this source itself"]);
    let text = dir_source("a", "depends_on = [\"b\"]\n")
        + &dir_source("b", "depends_on = [\"c\"]\n")
        + &dir_source("c", "depends_on = [\"a\"]\n")
        + &dir_source("d", "depends_on = [\"a\"]\n");
    let cycle = fx.problem(&text);
    assert_contains(
        &cycle,
        &["depends_on: the sources depend on each other in a cycle: a → b → c → a"],
    );
    // Two sources depending on one: no cycle.
    let diamond = dir_source("base", "")
        + &dir_source("x", "depends_on = [\"base\"]\n")
        + &dir_source("y", "depends_on = [\"base\", \"x\"]\n");
    assert!(fx.parse(&diamond).is_ok());
}

#[test]
fn drift_rules_are_read() {
    let fx = Fixture::new();
    let text = format!(
        "{DIR}recreate = true\ndrift_managers = [\"kubectl-edit\", \"helm\"]\n\
         [[source.ignore]]\nkind = \"Deployment\"\npaths = [\"/spec/replicas\"]\n\
         [[source.ignore]]\nnamespace = \"shop\"\nname = \"web\"\n\
         paths = [\"/metadata/annotations/example.com~1owner\"]\n"
    );
    let config = fx.parse(&text).unwrap();
    let drift = &config.sources[0].drift;
    assert_eq!(drift.recreate, Recreate::Allowed);
    let managers: Vec<&str> = drift.managers.names().collect();
    assert_eq!(managers, ["helm", "kubectl-edit"]);
    let rules = &drift.ignore.0;
    assert_eq!(rules[0].selector.kind.as_deref(), Some("Deployment"));
    assert_eq!(rules[0].paths[0].to_string(), "/spec/replicas");
    assert_eq!(rules[1].selector.namespace.as_deref(), Some("shop"));
    assert_eq!(rules[1].selector.name.as_deref(), Some("web"));
}

#[test]
fn ignore_rules_need_json_pointers() {
    let fx = Fixture::new();
    let problems = fx.problems(&format!(
        "{DIR}[[source.ignore]]\npaths = [\"spec.replicas\"]\n\
         [[source.ignore]]\nkind = \"Deployment\"\n"
    ));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_contains(
        &problems[0],
        &["ignore[0]", "spec.replicas", "JSON pointer"],
    );
    assert_contains(&problems[1], &["ignore[1]", "paths is missing"]);
    let err = fx.parse(&format!("{DIR}[[source.ignore]]\npath = [\"/a\"]\n"));
    assert_contains(&err.unwrap_err().to_string(), &["unknown field", "path"]);
}

#[test]
fn git_source_defaults_to_branch_main() {
    let fx = Fixture::new();
    let config = fx.parse(GIT).unwrap();
    let SourceLocation::Git(git) = &config.sources[0].kind else {
        panic!("not git")
    };
    assert_eq!(git.reference, GitRef::Branch("main".into()));
    assert_eq!(git.path, None);
    assert!(!git.is_ssh());
}

#[test]
fn full_git_source_is_read() {
    let fx = Fixture::new();
    let text = format!(
        "{GIT}tag = \"v1.2.0\"\npath = \"./clusters/dev/\"\ninterval = \"1h30m\"\n\
         username_env = \"GIT_TOKEN\"\npassword_env = \"GIT_TOKEN\"\n\
         webhook_secret_env = \"HOOK\"\nnamespace = \"shop\"\nprune = false\n\
         self_heal = false\nallow_mass_prune = true\nfull_resync_every = 3\n"
    );
    let config = fx.parse(&text).unwrap();
    let source = &config.sources[0];
    let SourceLocation::Git(git) = &source.kind else {
        panic!("not git")
    };
    assert_eq!(git.reference, GitRef::Tag("v1.2.0".into()));
    assert_eq!(git.path, Some(PathBuf::from("clusters/dev")));
    assert_eq!(git.password_env.as_deref(), Some("GIT_TOKEN"));
    assert_eq!(source.interval, Duration::from_secs(5400));
    assert_eq!(source.full_resync_every, 3);
    assert_eq!(source.namespace, "shop");
    assert!(!source.prune && !source.self_heal && source.allow_mass_prune);
}

#[test]
fn commit_pin_is_lowercased() {
    let fx = Fixture::new();
    let sha = "ABCDEF0123456789abcdef0123456789ABCDEF01";
    let config = fx.parse(&format!("{GIT}commit = \"{sha}\"\n")).unwrap();
    let SourceLocation::Git(git) = &config.sources[0].kind else {
        panic!("not git")
    };
    assert_eq!(git.reference, GitRef::Commit(sha.to_ascii_lowercase()));
}

#[test]
fn ssh_source_with_key_and_known_hosts() {
    let fx = Fixture::new();
    let text = "[[source]]\nname = \"s\"\ngit = \"git@github.com:org/repo.git\"\n\
                ssh_key_file = \"id_ed25519\"\nknown_hosts_file = \"known_hosts\"\n";
    let config = fx.parse(text).unwrap();
    let SourceLocation::Git(git) = &config.sources[0].kind else {
        panic!("not git")
    };
    assert!(git.is_ssh());
    assert_eq!(git.ssh_key_file, Some(fx.dir.path().join("id_ed25519")));
    assert_eq!(
        git.known_hosts_file,
        Some(fx.dir.path().join("known_hosts"))
    );
}

#[test]
fn request_timeout_is_a_positive_duration() {
    let fx = Fixture::new();
    let config = fx.parse(DIR).unwrap();
    assert_eq!(config.cluster.request_timeout, Duration::from_secs(60));
    let text = format!("[cluster]\nrequest_timeout = \"2m\"\n{DIR}");
    let config = fx.parse(&text).unwrap();
    assert_eq!(config.cluster.request_timeout, Duration::from_secs(120));
    for (value, says) in [
        ("60", "request_timeout = 60: not a duration string"),
        ("\"0s\"", "request_timeout = \"0s\": must be more than zero"),
        ("\"soon\"", "request_timeout = \"soon\""),
    ] {
        let problem = fx.problem(&format!("[cluster]\nrequest_timeout = {value}\n{DIR}"));
        assert_contains(&problem, &["[cluster]: ", says]);
    }
}

#[test]
fn cluster_and_server_sections() {
    let fx = Fixture::new();
    let text = format!(
        "state_dir = \"state\"\n[cluster]\nkubeconfig = \"~/.kube/config\"\ncontext = \"dev\"\n\
         [server]\nlisten = \"0.0.0.0:8080\"\n{DIR}"
    );
    let config = fx.parse(&text).unwrap();
    assert_eq!(
        config.cluster.kubeconfig,
        Some(fx.dir.path().join("home/.kube/config"))
    );
    assert_eq!(config.cluster.context.as_deref(), Some("dev"));
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.state_dir, fx.dir.path().join("state"));
}

#[test]
fn unknown_key_is_a_syntax_error_naming_it() {
    let fx = Fixture::new();
    let err = fx.parse(&format!("{DIR}intervall = \"5m\"\n")).unwrap_err();
    assert!(matches!(err, ConfigFileError::Syntax { .. }), "{err:?}");
    assert_contains(&err.to_string(), &["intervall", "line 4", "interval"]);
    let err = fx.parse("[servr]\nlisten = \"x\"\n").unwrap_err();
    assert_contains(&err.to_string(), &["servr"]);
}

#[test]
fn wrong_type_is_a_syntax_error() {
    let fx = Fixture::new();
    let err = fx.parse(&format!("{DIR}prune = \"yes\"\n")).unwrap_err();
    assert_contains(&err.to_string(), &["prune", "line 4"]);
}

/// The CLI's `--timeout "5 minutes"` works, so `interval = "5 minutes"` must too.
#[test]
fn interval_in_words_is_accepted() {
    let fx = Fixture::new();
    for (value, secs) in [("5 minutes", 300), ("90s", 90), ("1m30s", 90)] {
        let config = fx.parse(&format!("{GIT}interval = \"{value}\"\n")).unwrap();
        assert_eq!(
            config.sources[0].interval,
            Duration::from_secs(secs),
            "{value}"
        );
    }
}

#[test]
fn artifact_limits_are_mib_within_bounds() {
    let fx = Fixture::new();
    let config = fx
        .parse(&format!(
            "[limits]\nmax_artifact_mib = 8\nmax_unpacked_mib = 32\n{GIT}"
        ))
        .unwrap();
    assert_eq!(config.artifact_limits.max_download_bytes, 8 << 20);
    assert_eq!(config.artifact_limits.max_unpacked_bytes, 32 << 20);
    let problems = fx.problems(&format!(
        "[limits]\nmax_artifact_mib = 0\nmax_unpacked_mib = 5000\n{GIT}"
    ));
    assert!(
        problems.contains(&"[limits]: max_artifact_mib = 0: use 1 to 4096".to_string()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"[limits]: max_unpacked_mib = 5000: use 1 to 4096".to_string()),
        "{problems:?}"
    );
}

#[test]
fn limits_are_read_and_bounded() {
    let fx = Fixture::new();
    let config = fx.parse(GIT).unwrap();
    assert_eq!(config.limits, manifest::Limits::default());
    let config = fx
        .parse(&format!(
            "[limits]\nmax_file_mib = 2\nmax_depth = 20\n{GIT}"
        ))
        .unwrap();
    assert_eq!(config.limits.max_file_bytes, 2 << 20);
    assert_eq!(config.limits.max_depth, 20);
    let problems = fx.problems(&format!(
        "[limits]\nmax_file_mib = 0\nmax_depth = 500\n{GIT}"
    ));
    assert!(
        problems.contains(&"[limits]: max_file_mib = 0: use 1 to 1024".to_string()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"[limits]: max_depth = 500: use 1 to 120".to_string()),
        "{problems:?}"
    );
}

#[test]
fn bad_intervals_name_the_key_and_how_to_write_one() {
    let fx = Fixture::new();
    let cases = [
        (
            "\"5 parsecs\"",
            "interval = \"5 parsecs\": unknown unit \"parsecs\"",
        ),
        ("\"0s\"", "interval = \"0s\": must be more than zero"),
        (
            "\"-5s\"",
            "interval = \"-5s\": negative durations are not allowed",
        ),
        ("\"soon\"", "interval = \"soon\": not a duration"),
        ("\"30\"", "interval = \"30\": \"30\" has no unit"),
        ("30", "interval = 30: not a duration string"),
    ];
    for (value, expected) in cases {
        let problem = fx.problem(&format!("{GIT}interval = {value}\n"));
        assert_contains(&problem, &["source[0] \"shop\": ", expected, "e.g."]);
    }
}

#[test]
fn full_resync_every_is_at_least_one() {
    let fx = Fixture::new();
    for value in ["0", "-1", "4294967296"] {
        let problem = fx.problem(&format!("{GIT}full_resync_every = {value}\n"));
        let expected = format!("full_resync_every = {value}: must be a whole number from 1");
        assert_contains(&problem, &["source[0] \"shop\": ", &expected]);
    }
}

#[test]
fn missing_files_are_reported_with_the_resolved_path() {
    let fx = Fixture::new();
    let problem = fx.problem("[[source]]\nname = \"a\"\ndir = \"nope\"\n");
    let resolved = fx.dir.path().join("nope");
    assert_contains(
        &problem,
        &[
            "source[0] \"a\": dir = \"nope\": no such directory",
            &resolved.display().to_string(),
        ],
    );
    let problem = fx.problem(&format!("[cluster]\nkubeconfig = \"~/missing\"\n{DIR}"));
    assert_contains(
        &problem,
        &["[cluster] kubeconfig = \"~/missing\": no such file"],
    );
    let problem = fx.problem(&format!("[server]\ntoken_file = \"token\"\n{DIR}"));
    assert_contains(&problem, &["[server] token_file = \"token\": no such file"]);
    let text = "[[source]]\nname = \"s\"\ngit = \"ssh://git@host/repo.git\"\n\
                ssh_key_file = \"nokey\"\nknown_hosts_file = \"/no/known_hosts\"\n";
    let problems = fx.problems(text);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_contains(&problems[0], &["ssh_key_file = \"nokey\": no such file"]);
    assert_contains(
        &problems[1],
        &["known_hosts_file = \"/no/known_hosts\": no such file"],
    );
}

#[test]
fn a_file_where_a_directory_belongs() {
    let fx = Fixture::new();
    let problem = fx.problem("[[source]]\nname = \"a\"\ndir = \"id_ed25519\"\n");
    assert_contains(&problem, &["not a directory"]);
}

#[test]
fn dir_and_git_conflicts() {
    let fx = Fixture::new();
    let both = fx.problem(&format!("{DIR}git = \"https://h/r.git\"\n"));
    assert_contains(&both, &["source[0] \"app\": both dir and git are set"]);
    let neither = fx.problem("[[source]]\nname = \"x\"\n");
    assert_contains(
        &neither,
        &["source[0] \"x\": neither dir nor git nor chart is set"],
    );
}

#[test]
fn more_than_one_of_branch_tag_commit() {
    let fx = Fixture::new();
    let problem = fx.problem(&format!("{GIT}branch = \"dev\"\ntag = \"v1\"\n"));
    assert_contains(
        &problem,
        &["branch and tag are both set; keep one of branch, tag, commit"],
    );
}

#[test]
fn git_only_keys_on_a_dir_source() {
    let fx = Fixture::new();
    let problems = fx.problems(&format!("{DIR}branch = \"main\"\npath = \"x\"\n"));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_contains(
        &problems[0],
        &["branch = \"main\": only Git sources have branch"],
    );
    assert_contains(&problems[1], &["path = \"x\": only Git sources have path"]);
}

#[test]
fn duplicate_and_malformed_names() {
    let fx = Fixture::new();
    let dup = fx.problem(&format!("{DIR}{DIR}"));
    assert_contains(
        &dup,
        &["source[1] \"app\": name = \"app\": already used by source[0]"],
    );
    for bad in ["Shop", "shop_1", "-shop", "shop-", "a/b", ""] {
        let problem = fx.problem(&format!(
            "[[source]]\nname = {bad:?}\ndir = \"manifests\"\n"
        ));
        assert_contains(&problem, &["not a DNS label", "/hooks/git/<name>"]);
    }
    let missing = fx.problem("[[source]]\ndir = \"manifests\"\n");
    assert_contains(&missing, &["source[0]: name is missing"]);
}

#[test]
fn env_vars_must_be_set_and_not_empty() {
    let fx = Fixture::new();
    let problems = fx.problems(&format!(
        "{GIT}username_env = \"NOPE_USER\"\npassword_env = \"EMPTY\"\nwebhook_secret_env = \"HOOK\"\n"
    ));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_contains(
        &problems[0],
        &["username_env = \"NOPE_USER\": the environment variable NOPE_USER is not set"],
    );
    assert_contains(
        &problems[1],
        &["password_env = \"EMPTY\": the environment variable EMPTY is empty"],
    );
}

#[test]
fn auth_keys_must_fit_the_url() {
    let fx = Fixture::new();
    let ssh_on_https = fx.problem(&format!("{GIT}ssh_key_file = \"id_ed25519\"\n"));
    assert_contains(
        &ssh_on_https,
        &["ssh_key_file = \"id_ed25519\": only for ssh://"],
    );
    let pass_on_ssh = fx.problems(
        "[[source]]\nname = \"s\"\ngit = \"git@host:r.git\"\nssh_key_file = \"id_ed25519\"\n\
         known_hosts_file = \"known_hosts\"\npassword_env = \"GIT_TOKEN\"\n",
    );
    assert_eq!(pass_on_ssh.len(), 1, "{pass_on_ssh:#?}");
    assert_contains(
        &pass_on_ssh[0],
        &["password_env = \"GIT_TOKEN\": only for https URLs"],
    );
    let no_key = fx.problems("[[source]]\nname = \"s\"\ngit = \"ssh://git@host/r.git\"\n");
    assert_contains(&no_key[0], &["ssh_key_file is missing"]);
    assert_contains(&no_key[1], &["known_hosts_file is missing", "ssh-keyscan"]);
    let user_only = fx.problem(&format!("{GIT}username_env = \"GIT_TOKEN\"\n"));
    assert_contains(&user_only, &["username_env is set without password_env"]);
}

#[test]
fn bad_git_settings() {
    let fx = Fixture::new();
    let url = fx.problem("[[source]]\nname = \"s\"\ngit = \"ftp://user:pw@host/r\"\n");
    assert_contains(&url, &["not a supported Git URL", "ftp://user:***@host/r"]);
    assert!(!url.contains("pw"), "{url}");
    let commit = fx.problem(&format!("{GIT}commit = \"abc123\"\n"));
    assert_contains(&commit, &["commit = \"abc123\": not a full commit id"]);
    let branch = fx.problem(&format!("{GIT}branch = \"bad..name\"\n"));
    assert_contains(
        &branch,
        &["branch = \"bad..name\": not a valid Git branch name"],
    );
    let path = fx.problem(&format!("{GIT}path = \"../etc\"\n"));
    assert_contains(
        &path,
        &["path = \"../etc\": must be a directory inside the repository"],
    );
    let abs = fx.problem(&format!("{GIT}path = \"/etc\"\n"));
    assert_contains(&abs, &["path = \"/etc\""]);
    let climbs = fx.problem(&format!("{GIT}path = \"apps/../../etc\"\n"));
    assert_contains(
        &climbs,
        &["path = \"apps/../../etc\": must be a directory inside"],
    );
}

#[test]
fn bad_listen_namespace_and_context() {
    let fx = Fixture::new();
    let text = format!(
        "[cluster]\ncontext = \" \"\n[server]\nlisten = \"localhost\"\n{DIR}namespace = \"Prod\"\n"
    );
    let problems = fx.problems(&text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert_contains(&problems[0], &["[cluster] context", "empty"]);
    assert_contains(
        &problems[1],
        &["[server] listen = \"localhost\": not an IP address and port"],
    );
    assert_contains(
        &problems[2],
        &["namespace = \"Prod\": not a valid namespace name"],
    );
}

#[test]
fn no_sources_is_an_error() {
    let fx = Fixture::new();
    assert_contains(&fx.problem(""), &["no [[source]] table"]);
}

#[test]
fn every_problem_is_collected_and_displayed() {
    let fx = Fixture::new();
    let text = "[[source]]\nname = \"a\"\ndir = \"nope\"\ninterval = \"0s\"\n\
                [[source]]\nname = \"B\"\ngit = \"https://h/r.git\"\ncommit = \"x\"\n";
    let err = fx.parse(text).unwrap_err();
    let shown = err.to_string();
    assert_contains(
        &shown,
        &[
            "4 problems:",
            "interval = \"0s\"",
            "dir = \"nope\"",
            "name = \"B\"",
            "commit = \"x\"",
        ],
    );
}

#[test]
fn load_reports_a_missing_file() {
    let err = Config::load(Path::new("/nonexistent/config.toml")).unwrap_err();
    assert_contains(
        &err.to_string(),
        &["cannot read config file /nonexistent/config.toml"],
    );
}

#[test]
fn debug_output_hides_url_passwords() {
    let fx = Fixture::new();
    let text = "[[source]]\nname = \"s\"\ngit = \"https://me:hunter2@example.com/r.git\"\n";
    let config = fx.parse(text).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("https://me:***@example.com/r.git"),
        "{shown}"
    );
}

/// The quickstart runs the repository's own config.toml: it must stay valid.
#[test]
fn repository_config_toml_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let source = config.source("examples").expect("source \"examples\"");
    let guestbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/guestbook");
    assert_eq!(source.kind, SourceLocation::Dir { path: guestbook });
    assert_eq!(source.namespace, "default");
    assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
}

#[test]
fn durations_parse() {
    let ok = [
        ("30s", 30_000),
        ("5m", 300_000),
        ("90s", 90_000),
        ("1m30s", 90_000),
        ("1h30m", 5_400_000),
        ("500ms", 500),
        (" 2h ", 7_200_000),
        ("5 minutes", 300_000),
        ("5 m", 300_000),
        ("1.5s", 1_500),
        ("1d", 86_400_000),
        ("0s", 0),
    ];
    for (text, ms) in ok {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(ms)),
            "{text}"
        );
    }
    for bad in [
        "",
        "-1s",
        "s",
        "10",
        "soon",
        "5 parsecs",
        "99999999999999999999h",
    ] {
        let err = parse_duration(bad).expect_err(bad);
        assert!(err.to_string().contains("e.g. \"30s\""), "{err}");
    }
}

#[test]
fn urls_are_redacted() {
    let cases = [
        (
            "https://user:pa55@host/r.git",
            "https://user:***@host/r.git",
        ),
        ("https://tok3n@host/r.git", "https://***@host/r.git"),
        ("ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("https://host/r.git", "https://host/r.git"),
        ("git@host:r.git", "git@host:r.git"),
        ("https://u:p@ss@host/x", "https://u:***@host/x"),
    ];
    for (url, shown) in cases {
        assert_eq!(redact_url(url), shown);
    }
}

#[test]
fn url_transports() {
    assert_eq!(transport("https://h/r"), Some(Transport::Http));
    assert_eq!(transport("http://127.0.0.1:8080/r"), Some(Transport::Http));
    assert_eq!(transport("ssh://git@h:22/r"), Some(Transport::Ssh));
    assert_eq!(transport("git@github.com:org/r.git"), Some(Transport::Ssh));
    assert_eq!(transport("file:///srv/r.git"), Some(Transport::File));
    assert_eq!(transport("/srv/r.git"), Some(Transport::File));
    assert_eq!(transport("git://h/r"), None);
    assert_eq!(transport("r.git"), None);
    assert_eq!(transport("https://"), None);
}
#[test]
fn render_settings_are_read_and_checked() {
    let fx = Fixture::new();
    let text = format!(
        "{GIT}allow_remote_bases = true\nvars_from = [\"configmap/flux/vars\", \"secret/flux/creds\"]\n\
         [source.vars]\nCLUSTER = \"prod\"\nREPLICAS = 3\n\
         [source.helm]\nrelease = \"web\"\nvalues_files = [\"values-prod.yaml\"]\n\
         set = [\"image.tag=6.0\"]\nvalues = {{ replicaCount = 2, ui = {{ color = \"red\" }} }}\n\
         [render]\ntimeout = \"2m\"\n"
    );
    let config = fx.parse(&text).unwrap();
    let render = &config.sources[0].render;
    assert!(render.allow_remote_bases);
    assert_eq!(format!("{:?}", render.vars), "{\"CLUSTER\", \"REPLICAS\"}");
    assert_eq!(render.vars_from[1].to_string(), "secret/flux/creds");
    assert_eq!(render.helm.release.as_deref(), Some("web"));
    assert_eq!(render.helm.values["ui"]["color"], "red");
    assert_eq!(render.helm.set, ["image.tag=6.0"]);
    assert_eq!(config.render.limits.timeout, Duration::from_secs(120));
    assert_eq!(config.render.tools, ToolPaths::default());

    let bad = format!(
        "{DIR}vars_from = [\"pod/ns/x\"]\n[source.vars]\n1X = \"a\"\n\
         [source.helm]\nvalues_files = [\"../x.yaml\"]\nset = [\"novalue\"]\n\
         [render]\nhelm = \"/no/such/helm\"\n"
    );
    let problems = fx.problems(&bad).join("\n");
    for part in [
        "vars.1X: not a variable name",
        "vars_from \"pod/ns/x\"",
        "helm.values_files \"../x.yaml\"",
        "helm.set \"novalue\"",
        "[render] helm = \"/no/such/helm\"",
    ] {
        assert!(problems.contains(part), "{part:?} not in {problems}");
    }
}

#[test]
fn decryption_is_read_and_checked() {
    let fx = Fixture::new();
    let text = format!(
        "{DIR}[source.decryption]\nprovider = \"sops\"\nsecret = \"flux-system/sops-age\"\n"
    );
    let config = fx.parse(&text).unwrap();
    let decryption = &config.sources[0].render.decryption;
    assert_eq!(
        decryption
            .secret
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("flux-system/sops-age")
    );
    assert!(decryption.key_files.is_empty());
    assert!(
        fx.parse(DIR).unwrap().sources[0]
            .render
            .decryption
            .is_empty()
    );

    let bad = format!(
        "{DIR}[source.decryption]\nprovider = \"vault\"\nsecret = \"no-namespace\"\nkey_files = [\"/no/such.agekey\"]\n"
    );
    let problems = fx.problems(&bad).join("\n");
    for part in [
        "decryption.provider = \"vault\": only \"sops\" is supported",
        "decryption.secret: \"no-namespace\" is not NAMESPACE/NAME",
        "decryption.key_files \"/no/such.agekey\"",
    ] {
        assert!(problems.contains(part), "{part:?} not in {problems}");
    }
    let none = format!("{DIR}[source.decryption]\nprovider = \"sops\"\n");
    assert!(
        fx.problems(&none)
            .join("\n")
            .contains("decryption needs a secret")
    );
}

#[test]
fn leader_election_is_off_with_client_go_defaults() {
    let fx = Fixture::new();
    let election = fx.parse(DIR).unwrap().leader_election;
    assert_eq!(election, LeaderElectionConfig::default());
    assert!(!election.enabled);
    assert_eq!(election.name, "converge");
    assert_eq!(
        (
            election.timing.lease_duration.as_secs(),
            election.timing.renew_deadline.as_secs(),
            election.timing.retry_period.as_secs()
        ),
        (15, 10, 2)
    );
}

#[test]
fn leader_election_is_read() {
    let fx = Fixture::new();
    let text = format!(
        "{DIR}[leader_election]\nenabled = true\nshard = true\nnamespace = \"ops\"\n\
         name = \"gitops\"\nlease_duration = \"6s\"\nrenew_deadline = \"4s\"\n\
         retry_period = \"500ms\"\n"
    );
    let election = fx.parse(&text).unwrap().leader_election;
    assert!(election.enabled);
    assert_eq!(election.scope, ElectionScope::Source);
    assert_eq!(election.namespace.as_deref(), Some("ops"));
    assert_eq!(election.name, "gitops");
    assert_eq!(election.timing.retry_period, Duration::from_millis(500));
}

#[test]
fn leader_election_timings_must_let_a_leader_stop_first() {
    let fx = Fixture::new();
    let bad = |keys: &str| fx.problem(&format!("{DIR}[leader_election]\n{keys}"));
    assert_contains(
        &bad("lease_duration = \"10s\"\n"),
        &["[leader_election]", "longer than renew_deadline"],
    );
    assert_contains(&bad("retry_period = \"9s\"\n"), &["1.2 × retry_period"]);
    assert_contains(&bad("lease_duration = \"15.5s\"\n"), &["whole seconds"]);
    assert_contains(&bad("retry_period = 2\n"), &["retry_period = 2", "quoted"]);
    assert_contains(&bad("name = \"Con_verge\"\n"), &["name = \"Con_verge\""]);
    let long = "x".repeat(60);
    assert_contains(
        &bad(&format!("shard = true\nname = \"{long}\"\n")),
        &["at most 59 characters"],
    );
}

#[test]
fn notify_targets_are_read_with_defaults() {
    let f = Fixture::new();
    let text = format!(
        "{GIT}{DIR}
[[notify]]
name = \"ops\"
kind = \"webhook\"
url = \"http://127.0.0.1:9/hook/\"
events = [\"synced\", \"drifted\", \"healed\", \"synced\"]
secret_env = \"HOOK\"

[[notify]]
kind = \"github\"
events = [\"synced\", \"failed\"]
sources = [\"shop\"]
token_env = \"GIT_TOKEN\"
timeout = \"3s\"

[[notify]]
kind = \"slack\"
url = \"https://hooks.example.com/T0/B0/x\"
events = [\"degraded\"]
"
    );
    let config = f.parse(&text).unwrap();
    let [hook, github, slack] = &config.notify[..] else {
        panic!("{:?}", config.notify)
    };
    assert_eq!(hook.name, "ops");
    assert_eq!(hook.url, "http://127.0.0.1:9/hook");
    assert_eq!(
        hook.events,
        [
            NotifyEvent::Synced,
            NotifyEvent::Drifted,
            NotifyEvent::Healed
        ]
    );
    assert_eq!(hook.secret, Some(SecretFrom::Env("HOOK".into())));
    assert_eq!(hook.timeout, DEFAULT_NOTIFY_TIMEOUT);
    assert!(hook.covers("app") && hook.covers("shop"));
    assert_eq!(github.name, "github-1");
    assert_eq!(github.url, DEFAULT_GITHUB_API);
    assert_eq!(github.repository, Repository::FromSource);
    assert_eq!(github.timeout, std::time::Duration::from_secs(3));
    assert!(github.covers("shop") && !github.covers("app"));
    assert_eq!(slack.kind, NotifyKind::Slack);
    assert_eq!(slack.secret, None);
}

#[test]
fn notify_problems_name_the_table_its_line_and_the_fix() {
    let f = Fixture::new();
    let text = format!(
        "{GIT}{DIR}
[[notify]]
kind = \"webhook\"
url = \"http://127.0.0.1:9/\"
events = [\"synced\", \"exploded\"]
secret_env = \"HOOK\"
"
    );
    let problem = f.problem(&text);
    assert_contains(
        &problem,
        &[
            "notify[0] (line 8)",
            "\"exploded\" is not an event",
            "synced, failed, drifted, healed, degraded, recovered, waiting",
        ],
    );
    let text = format!(
        "{GIT}{DIR}
[[notify]]
kind = \"gitlab\"
events = [\"synced\"]
sources = [\"app\", \"nope\"]
token_env = \"UNSET\"
"
    );
    let problems = f.problems(&text).join("\n");
    assert_contains(
        &problems,
        &[
            "\"app\" is not a Git source",
            "\"nope\" is not a [[source]]",
            "the environment variable UNSET is not set",
        ],
    );
    let text = format!(
        "{GIT}\n[[notify]]\nkind = \"webhook\"\nurl = \"ftp://x\"\nevents = [\"synced\"]\n"
    );
    let problems = f.problems(&text).join("\n");
    assert_contains(
        &problems,
        &[
            "url = \"ftp://x\": write an http://",
            "secret_env or secret_file is required",
        ],
    );
    let text = format!("{GIT}\n[[notify]]\nkind = \"teams\"\n");
    assert_contains(
        &f.problem(&text),
        &["kind = \"teams\"", "webhook, slack, github, gitlab"],
    );
    let text = format!(
        "{GIT}\n[[notify]]\nkind = \"slack\"\nurl = \"https://h/x\"\nevents = [\"synced\"]\ntoken_env = \"GIT_TOKEN\"\n"
    );
    assert_contains(
        &f.problem(&text),
        &["token_env: a slack target has no secret"],
    );
}

#[test]
fn notify_secrets_are_named_not_held() {
    let f = Fixture::new();
    let text = format!(
        "{GIT}\n[[notify]]\nkind = \"github\"\nevents = [\"synced\"]\ntoken_env = \"GIT_TOKEN\"\n"
    );
    let config = f.parse(&text).unwrap();
    let printed = format!("{config:?}");
    assert!(printed.contains("GIT_TOKEN"));
    assert!(!printed.contains("s3cret"), "{printed}");
}

#[test]
fn relist_every_defaults_to_six_hours_and_is_set_globally_or_per_source() {
    let fx = Fixture::new();
    let config = fx.parse(GIT).unwrap();
    assert_eq!(config.sources[0].relist_every, DEFAULT_RELIST_EVERY);
    assert_eq!(DEFAULT_RELIST_EVERY, Duration::from_secs(6 * 3600));
    let text = format!(
        "relist_every = \"1h\"\n{GIT}\n[[source]]\nname = \"own\"\ndir = \"manifests\"\n\
         relist_every = \"20s\"\n"
    );
    let config = fx.parse(&text).unwrap();
    assert_eq!(config.sources[0].relist_every, Duration::from_secs(3600));
    assert_eq!(config.sources[1].relist_every, Duration::from_secs(20));
}

#[test]
fn bad_relist_every_names_the_key_and_where() {
    let fx = Fixture::new();
    let problem = fx.problem(&format!("{GIT}relist_every = \"0s\"\n"));
    assert_contains(
        &problem,
        &[
            "source[0] \"shop\": ",
            "relist_every = \"0s\": must be more than zero",
        ],
    );
    let problem = fx.problem(&format!("relist_every = 6\n{GIT}"));
    assert_contains(
        &problem,
        &[
            "config: ",
            "relist_every = 6: not a duration string",
            "e.g.",
        ],
    );
    let err = fx
        .parse(&format!("{GIT}relist_evry = \"1h\"\n"))
        .unwrap_err();
    assert_contains(&err.to_string(), &["relist_evry", "line 4"]);
}

const CHART: &str = "[[source]]\nname = \"web\"\nchart = \"podinfo\"\n";

#[test]
fn chart_source_from_a_helm_repository_is_read() {
    let fx = Fixture::new();
    fs::write(fx.dir.path().join("ca.pem"), "").unwrap();
    let text = format!(
        "{CHART}helm_repo = \"https://charts.example/podinfo/\"\nversion = \"6.14.x\"\n\
         password_env = \"GIT_TOKEN\"\nca_file = \"ca.pem\"\nwebhook_secret_env = \"HOOK\"\n"
    );
    let config = fx.parse(&text).unwrap();
    let SourceLocation::HelmChart(chart) = &config.sources[0].kind else {
        panic!("not a chart source")
    };
    assert_eq!(chart.repo, "https://charts.example/podinfo");
    assert_eq!(chart.chart, "podinfo");
    assert_eq!(chart.version.as_deref(), Some("6.14.x"));
    assert_eq!(
        chart.auth,
        HelmAuth::Basic {
            username_env: None,
            password_env: "GIT_TOKEN".into()
        }
    );
    assert_eq!(chart.ca_file, Some(fx.dir.path().join("ca.pem")));
    let latest = fx
        .parse(&format!(
            "{CHART}helm_repo = \"http://127.0.0.1:8080\"\ntoken_env = \"GIT_TOKEN\"\n"
        ))
        .unwrap();
    let SourceLocation::HelmChart(chart) = &latest.sources[0].kind else {
        panic!("not a chart source")
    };
    assert_eq!(chart.version, None, "absent: the latest stable version");
    assert_eq!(
        chart.auth,
        HelmAuth::Bearer {
            token_env: "GIT_TOKEN".into()
        }
    );
}

#[test]
fn chart_source_problems_name_the_key_and_what_to_write() {
    let fx = Fixture::new();
    let missing = fx.problem(CHART);
    assert_contains(
        &missing,
        &["source[0] \"web\"", "needs helm_repo = \"https://…\""],
    );
    let bad = fx.problems(&format!(
        "{CHART}helm_repo = \"ftp://u:p@host/x\"\nversion = \">=1 <<2\"\nbranch = \"main\"\n\
         token_env = \"NOPE\"\n"
    ));
    assert_eq!(bad.len(), 4, "{bad:#?}");
    assert_contains(
        &bad.join("\n"),
        &[
            "branch = \"main\": only Git sources have branch",
            "helm_repo = \"ftp://u:***@host/x\": not an http(s) URL",
            "version = \">=1 <<2\"",
            "token_env = \"NOPE\": the environment variable NOPE is not set",
        ],
    );
    let on_git = fx.problem(&format!("{GIT}version = \"1.x\"\n"));
    assert_contains(
        &on_git,
        &["version = \"1.x\": only chart sources have version"],
    );
    let both = fx.problem(&format!("{DIR}chart = \"podinfo\"\n"));
    assert_contains(&both, &["both dir and chart are set"]);
}
