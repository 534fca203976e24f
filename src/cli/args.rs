//! The command line: every flag is declared, defaulted and validated here, so the
//! commands receive settings they can trust.

use clap::{Args, Parser, Subcommand, ValueEnum};
use converge::config::parse_duration;
use converge::engine::{DriftManagers, DriftRules, IgnoreRule, IgnoreRules, Recreate};
use converge::kube::is_dns_label;
use converge::manifest::{Limits, MAX_DEPTH_ALLOWED};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Keep a Kubernetes cluster converged with manifests from Git or a directory.
///
/// converge diffs manifests against the live cluster with the server's own
/// dry-run, applies them with server-side apply, and prunes only what it owns
/// (an ApplySet). Exit codes: 0 success (for `diff`: no changes), 1 `diff` found
/// changes, 2 error, 3 `apply --wait`: something failed or was not ready in time.
#[derive(Debug, Parser)]
#[command(name = "converge", version, about, long_about)]
pub(crate) struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Converge the cluster with the manifests: create, update and (with --prune)
    /// delete objects.
    ///
    /// Every object is first dry-run on the server; if any is rejected, nothing is
    /// written. Unchanged objects are never written.
    ///
    /// With --wait, converge then watches every object until it is ready (rolled
    /// out, available, bound, complete) and explains whatever is not: conditions,
    /// Events, container states and log lines. Exit code 0: applied (and ready),
    /// 2: error before or while applying, 3: something failed or was not ready
    /// before --timeout.
    #[command(
        after_help = "Examples:\n  converge apply examples/guestbook --prune\n  \
                            converge apply k8s/ -n shop --dry-run\n  \
                            converge apply k8s/ --wait --timeout 2m"
    )]
    Apply(ApplyArgs),
    /// Show what `apply` would change, as unified diffs computed by the server's
    /// dry-run. Exit code 0: no changes, 1: changes, 2: error.
    ///
    /// Pull-request previews: --git URL --ref REF renders a revision of a
    /// repository (a URL or a local clone) as a source would (kustomize, Helm,
    /// --var) and diffs it against the cluster; with --base REF, against another
    /// revision instead, offline: no cluster needed, for CI without cluster access.
    /// `-o markdown` writes a pull-request comment: counts, objects created,
    /// changed and pruned, the hooks that would run, each diff folded, Secret
    /// values masked, at most --max-bytes long.
    #[command(after_help = "Examples:\n  converge diff examples/guestbook\n  \
                            converge diff k8s/ --prune -o json\n  \
                            converge diff --git https://github.com/acme/deploy --ref feature --path shop --prune\n  \
                            converge diff --git . --ref HEAD --base origin/main --path shop -o markdown > comment.md\n  \
                            converge diff --git . --ref refs/pull/12/head --prune -o markdown --max-bytes 60000")]
    Diff(DiffArgs),
    /// Run the daemon: keep every source in config.toml converged, watch for drift,
    /// and serve /healthz, /readyz, /metrics, /status and /hooks/git/<source>.
    ///
    /// A directory source is applied within a second of a change; a Git source on
    /// its webhook or every `interval`. A revision that fails (bad YAML, a value the
    /// API server rejects) changes nothing and the last good one stays applied.
    #[command(after_help = "Examples:\n  converge run\n  \
                            converge run --config /etc/converge/config.toml --log-format json\n  \
                            converge run --dry-run    # report drift, never write")]
    Run(RunArgs),
    /// Show the daemon's sync and drift status (from its /status endpoint).
    /// Exit code 0: every source synced (objects ready or progressing), 1: something
    /// drifted, failed or is pending, 2: the daemon cannot be reached, 3: synced, but
    /// an object failed (a rollout past its deadline, a crash loop) or went missing.
    Status(StatusArgs),
    // The daemon's control API (src/cli/control.rs): suspend, resume, reconcile.
    /// Suspend a source: the daemon stops writing it (no apply, no healing) but keeps
    /// reporting its drift in /status. The suspension is kept in the cluster (on the
    /// source's ApplySet parent), so it outlives restarts and failovers.
    /// Exit code 0: suspended, 2: refused (a follower names the leader) or unreachable.
    #[command(after_help = "Examples:\n  converge suspend shop --reason \"incident 4711\"")]
    Suspend(SuspendArgs),
    /// Resume a suspended source: the daemon converges it at once.
    /// Exit code 0: resumed, 2: refused or unreachable.
    Resume(ControlArgs),
    /// Fetch and reconcile a source now, and print what was written and its health.
    /// Exit codes as `apply`: 0 converged (with --wait: and ready), 2 error,
    /// 3 an object failed, or (with --wait) was not ready before --timeout.
    #[command(after_help = "Examples:\n  converge reconcile shop\n  \
                            converge reconcile shop --wait --timeout 2m")]
    Reconcile(ReconcileArgs),
    /// Publish a directory of manifests to an OCI registry as an artifact (one
    /// tar+gzip layer with Flux's media types), for `oci = "oci://…"` sources,
    /// `converge apply oci://…` and Flux. Prints the manifest's digest.
    /// Exit code 0: pushed, 2: error.
    #[command(after_help = "Examples:\n  \
        converge push oci://ghcr.io/org/app-manifests:v1.2.0 --path k8s/\n  \
        converge push oci://ghcr.io/org/app:main --path k8s/ \\\n      \
        --source https://github.com/org/app --revision main@sha1:$(git rev-parse HEAD)")]
    Push(PushArgs),
    /// Print converge's version and build information.
    Version,
    // `get`, `completions` and `man`: reading what is deployed, and the shell's
    // and man's view of this command line.
    /// List what the daemon deploys: its sources (revision, result, health,
    /// drift, the replica that writes each) or their objects, from its /status.
    /// Exit code 0: listed, 2: the daemon cannot be reached or the source is
    /// unknown.
    #[command(after_help = "Examples:\n  converge get sources\n  \
                            converge get objects shop\n  \
                            converge get objects -o json | jq '.[] | select(.drift == \"drifted\")'")]
    Get(GetArgs),
    /// Print a completion script for a shell.
    #[command(after_help = "Examples:\n  \
        converge completions bash > /etc/bash_completion.d/converge\n  \
        converge completions zsh > \"${fpath[1]}/_converge\"\n  \
        converge completions fish > ~/.config/fish/completions/converge.fish")]
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page (roff), generated from this command line's definitions.
    #[command(
        after_help = "Examples:\n  converge man > converge.1 && man -l converge.1\n  \
                            converge man --out-dir docs/man    # converge.1, converge-diff.1, …"
    )]
    Man {
        /// Write one page per command into this directory instead (converge.1,
        /// converge-apply.1, converge-diff.1, …).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// `converge push`: a directory published as an OCI artifact.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// oci://REGISTRY/REPOSITORY:TAG (the tag defaults to `latest`). Plain HTTP
    /// only for a loopback registry, or with --insecure.
    #[arg(value_name = "REFERENCE")]
    pub reference: String,
    /// The directory to publish; packed reproducibly (sorted, no timestamps or
    /// owners), so the same content has the same digest.
    #[arg(long, value_name = "DIR")]
    pub path: PathBuf,
    /// Annotation org.opencontainers.image.source: where the content comes from.
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// Annotation org.opencontainers.image.revision: which revision of it.
    #[arg(long, value_name = "REVISION")]
    pub revision: Option<String>,
    /// Reach a registry beyond loopback over plain HTTP.
    #[arg(long)]
    pub insecure: bool,
}

/// Where `converge run` serves its API, and the token it asks for: the same flags
/// for `status`, `get` and the control verbs.
#[derive(Debug, Args)]
pub(crate) struct DaemonAddr {
    /// Where `converge run` serves its endpoints.
    #[arg(
        long,
        env = "CONVERGE_ADDR",
        default_value = "127.0.0.1:9476",
        global = true
    )]
    pub addr: String,
    /// A file holding the daemon's bearer token (its [server] token_file).
    #[arg(long, env = "CONVERGE_TOKEN_FILE", value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

impl DaemonAddr {
    /// The daemon's `/status`, asked with the token when there is one.
    pub(crate) async fn status(&self) -> anyhow::Result<converge::daemon::StatusReport> {
        let token = super::control::read_token(self.token_file.as_deref())?;
        Ok(converge::daemon::fetch_status(&self.addr, token.as_deref()).await?)
    }
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    #[command(subcommand)]
    pub what: GetWhat,
    #[command(flatten)]
    pub daemon: DaemonAddr,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum GetWhat {
    /// One row per source: revision, result, health, drift, owner replica.
    Sources,
    /// One row per object: its source, drift, health, revision and origin.
    Objects {
        /// Only this source's objects.
        source: Option<String>,
    },
}

/// The shells `converge completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// Which daemon, and which of its sources.
#[derive(Debug, Args)]
pub(crate) struct ControlArgs {
    /// The source's name in config.toml.
    pub source: String,
    #[command(flatten)]
    pub daemon: DaemonAddr,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct SuspendArgs {
    #[command(flatten)]
    pub target: ControlArgs,
    /// Why, for whoever reads /status next.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who suspends it. Default: $USER@hostname.
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ReconcileArgs {
    #[command(flatten)]
    pub target: ControlArgs,
    /// Then wait until every object is ready (or one failed).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", value_parser = parse_duration, requires = "wait")]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The daemon's configuration file.
    #[arg(
        long,
        short = 'c',
        env = "CONVERGE_CONFIG",
        default_value = "config.toml"
    )]
    pub config: PathBuf,
    /// Report drift and show it in /status, but never write to the cluster.
    #[arg(long, env = "CONVERGE_DRY_RUN")]
    pub dry_run: bool,
    /// Address for the HTTP endpoints, overriding [server] listen.
    #[arg(long, env = "CONVERGE_LISTEN", value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// kubeconfig file, overriding [cluster] kubeconfig.
    #[arg(long, env = "CONVERGE_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context, overriding [cluster] context.
    #[arg(long, env = "CONVERGE_CONTEXT")]
    pub context: Option<String>,
    /// Log format on stderr.
    #[arg(long, value_enum, env = "CONVERGE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Run as one of several replicas: only the holder of a Lease writes, the
    /// others stand by (as [leader_election] enabled = true).
    #[arg(long, env = "CONVERGE_LEADER_ELECT")]
    pub leader_elect: bool,
    /// This replica's identity in the Leases. Default: hostname_pid (in a Pod the
    /// hostname is the Pod's name).
    #[arg(long, env = "CONVERGE_ID", value_parser = parse_identity)]
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub daemon: DaemonAddr,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Color: auto (in a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `diff`'s own flags, on top of those it shares with `apply`.
#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    #[command(flatten)]
    pub sync: SyncArgs,
    /// Compare the --git revision with this revision of the same repository,
    /// object by object, without a cluster (no kubeconfig is read). Server
    /// defaults and admission are not applied, so the live diff can be smaller.
    #[arg(
        long,
        value_name = "REF",
        requires = "git",
        help_heading = "Git revision"
    )]
    pub base: Option<String>,
    /// `-o markdown`: the most bytes the comment may take (GitHub's limit is
    /// 65536 characters); diffs that do not fit are left out, and a note says so.
    #[arg(long, value_name = "BYTES", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(converge::preview::MIN_MARKDOWN_BYTES as u64..))]
    pub max_bytes: u64,
    /// `-o markdown`: the comment's heading. Default: says what was compared.
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
}

/// Where `apply` and `diff` read a Git revision instead of PATHs.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Git revision")]
pub(crate) struct RevisionArgs {
    /// Read the manifests from a Git revision instead of PATHs: a URL (https,
    /// http, ssh, file) or a local repository's directory. Fetched with the
    /// daemon's own Git client into a scratch directory.
    // Not with PATHs, checked by `SyncArgs::check_source`: clap's `conflicts_with`
    // here would let --ref, --path and --base go without --git.
    #[arg(long, value_name = "URL|DIR")]
    pub git: Option<String>,
    /// The revision: a branch (else a tag, else a remote-tracking branch such as
    /// origin/main, of that name), a commit id, or a full ref as the remote lists
    /// it (refs/pull/12/head, HEAD). Default: HEAD.
    #[arg(long = "ref", value_name = "REF", requires = "git")]
    pub reference: Option<String>,
    /// The manifests' directory inside the repository (as a source's `path`).
    #[arg(long, value_name = "DIR", requires = "git")]
    pub path: Option<PathBuf>,
    /// HTTPS: the environment variable holding the user name (default `git`),
    /// as a source's username_env.
    #[arg(long, value_name = "VAR", requires = "git_password_env")]
    pub git_username_env: Option<String>,
    /// HTTPS: the environment variable holding the password or token, as a
    /// source's password_env (e.g. GITHUB_TOKEN in CI).
    #[arg(long, value_name = "VAR", requires = "git")]
    pub git_password_env: Option<String>,
    /// SSH: the private key file, as a source's ssh_key_file.
    #[arg(long, value_name = "FILE", requires = "git")]
    pub git_ssh_key: Option<PathBuf>,
    /// SSH: the known_hosts file the server's key is checked against. Default:
    /// ~/.ssh/known_hosts.
    #[arg(long, value_name = "FILE", requires = "git_ssh_key")]
    pub git_known_hosts: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    #[command(flatten)]
    pub sync: SyncArgs,
    /// Show what would change (like `diff`) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// After applying, wait until every object is ready; explain what is not.
    /// Exit code 3 when something failed or was not ready within --timeout.
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// How long --wait waits, e.g. 90s, 5m, 1h30m, "5 minutes"; also how long each
    /// sync wave and hook may take to become healthy (5m without --wait).
    #[arg(long, default_value = "5m", value_parser = parse_duration, requires = "wait")]
    pub timeout: std::time::Duration,
}

/// The options `apply` and `diff` share: what to converge and how to report it.
#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    /// Manifest files or directories (YAML or JSON; directories are read
    /// recursively, hidden entries skipped).
    #[arg(required_unless_present_any = ["git", "helm_repo"], value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Name of the ApplySet that records what these manifests own (its parent is
    /// the ConfigMap converge-NAME). Default: the first path's directory name.
    #[arg(long, value_parser = parse_name)]
    pub name: Option<String>,
    /// Namespace for namespaced objects that name none, and for the ApplySet
    /// parent. Default: the kubeconfig context's namespace, else `default`.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Delete objects of this ApplySet whose manifests are gone.
    #[arg(long)]
    pub prune: bool,
    /// Allow a prune of more than half of the owned objects, or of everything
    /// when the source has no manifests. Usually a wrong path or branch.
    #[arg(long)]
    pub allow_mass_prune: bool,
    /// Create the namespace (--namespace) when it does not exist, as Helm's
    /// --create-namespace does. Deleted again if the revision is refused; never
    /// pruned later.
    #[arg(long)]
    pub create_namespace: bool,
    /// Take over objects another ApplySet (another source, another `--name`)
    /// owns, instead of refusing them; one object may also say so with the
    /// annotation converge.dev/adopt: allowed.
    #[arg(long)]
    pub adopt: bool,
    /// kubeconfig file. Default: $KUBECONFIG, else ~/.kube/config, else in-cluster.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context to use instead of the current one.
    #[arg(long)]
    pub context: Option<String>,
    /// How long one API request may take, retries included. Refused or broken
    /// connections, 429 and 5xx answers (an API server restarting) are retried with
    /// backoff until then; rejections are not. E.g. 60s, 5m.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub request_timeout: std::time::Duration,
    /// Output format (markdown: `diff` only, a pull-request comment).
    #[arg(short, long, value_enum, default_value_t = ReportFormat::Text)]
    pub output: ReportFormat,
    /// Color diffs: auto (in a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// A TOML file of [[health]] rules: CEL expressions that say when objects of a
    /// kind are in progress, failed or ready (see config.toml). They decide before
    /// converge's own rules, for waves, hooks and --wait. Repeatable; the first
    /// rule for a kind wins.
    #[arg(long = "health", value_name = "FILE")]
    pub health: Vec<PathBuf>,
    /// A field converge neither reports nor writes in existing objects, because
    /// another controller owns it (a source's [[source.ignore]]). RULE is a JSON
    /// pointer, for every object, or KIND:POINTER, KIND/NAME:POINTER or
    /// KIND/NAMESPACE/NAME:POINTER. Repeatable. E.g. an HPA's replicas:
    /// --ignore Deployment:/spec/replicas
    #[arg(long, value_name = "RULE")]
    pub ignore: Vec<IgnoreRule>,
    /// Field managers whose edits inside converge's objects are drift: converge
    /// takes their fields over and removes what the manifests do not declare
    /// (comma-separated; empty for none; a source's drift_managers). Default:
    /// kubectl, kubectl-edit, kubectl-patch, kubectl-replace,
    /// kubectl-client-side-apply, kubectl-scale, kubectl-label, kubectl-annotate,
    /// before-first-apply.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub drift_managers: Option<Vec<String>>,
    /// Delete and re-create objects whose immutable fields changed (a Deployment's
    /// selector, a Job's template), as if each were annotated
    /// `converge.dev/recreate: allowed` (a source's recreate = true). Never
    /// Namespaces or CRDs.
    #[arg(long)]
    pub recreate: bool,
    /// Refuse a manifest file larger than this many MiB (config.toml's [limits]
    /// max_file_mib).
    #[arg(long, value_name = "MIB", default_value_t = converge::manifest::MAX_FILE_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_file_mib: u64,
    /// Refuse a document nested deeper than this many levels ([limits] max_depth).
    #[arg(long, value_name = "LEVELS", default_value_t = converge::manifest::MAX_DEPTH,
          value_parser = parse_depth)]
    pub max_depth: usize,
    /// An age key file (or OpenSSH private key) to decrypt SOPS files with; may be
    /// repeated. `SOPS_AGE_KEY` may hold identities too, as for sops.
    #[arg(
        long,
        value_name = "FILE",
        env = "SOPS_AGE_KEY_FILE",
        hide_env_values = true
    )]
    pub age_key_file: Vec<PathBuf>,
    #[command(flatten)]
    pub render: RenderArgs,
    #[command(flatten)]
    pub revision: RevisionArgs,
    #[command(flatten)]
    pub chart: ChartArgs,
}

/// Where `apply` and `diff` read a chart from a Helm repository instead of PATHs:
/// the daemon's own fetch code, so a preview works before a source exists.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Helm repository")]
pub(crate) struct ChartArgs {
    /// Read a chart from this Helm repository (the URL holding index.yaml), as a
    /// chart source's helm_repo. Rendered like a chart PATH (--values, --set,
    /// --release apply).
    #[arg(long, value_name = "URL", requires = "chart")]
    pub helm_repo: Option<String>,
    /// The chart's name in the repository's index.
    #[arg(long, value_name = "NAME", requires = "helm_repo")]
    pub chart: Option<String>,
    /// A version or a semver constraint (6.14.x, ^6.14, >=6.14 <7). Default: the
    /// latest stable version.
    #[arg(long = "version", value_name = "CONSTRAINT", requires = "helm_repo")]
    pub chart_version: Option<String>,
    /// The environment variable holding the repository's user name (basic auth;
    /// default `helm`), as a source's username_env.
    #[arg(long, value_name = "VAR", requires = "helm_password_env")]
    pub helm_username_env: Option<String>,
    /// The environment variable holding the repository's password (basic auth).
    #[arg(long, value_name = "VAR", requires = "helm_repo")]
    pub helm_password_env: Option<String>,
    /// The environment variable holding a bearer token for the repository.
    #[arg(
        long,
        value_name = "VAR",
        requires = "helm_repo",
        conflicts_with = "helm_password_env"
    )]
    pub helm_token_env: Option<String>,
    /// PEM certificate authorities for the repository's TLS certificate.
    #[arg(long, value_name = "FILE", requires = "helm_repo")]
    pub helm_ca_file: Option<PathBuf>,
    /// Cache charts (--helm-repo's and the dependencies a chart PATH fetches)
    /// under this directory, e.g. the daemon's state_dir, so a second run
    /// downloads nothing. Default: a scratch directory.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// How a PATH holding a Helm chart is rendered (a kustomization or plain manifests
/// ignore these).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Helm charts")]
pub(crate) struct RenderArgs {
    /// A values file (repeatable; later files win).
    #[arg(long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// A value, as `helm --set` takes it (repeatable; wins over values files).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<String>,
    /// The release name. Default: the ApplySet name (--name).
    #[arg(long, value_name = "NAME")]
    pub release: Option<String>,
    /// A variable for `${NAME}` post-build substitution, as a source's
    /// [source.vars] (repeatable; turns substitution on for every root).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var,
          help_heading = "Substitution")]
    pub vars: Vec<(String, String)>,
}

fn parse_var(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, text)) if converge::render::is_var_name(name) => {
            Ok((name.to_string(), text.to_string()))
        }
        _ => Err(format!(
            "{value:?} is not NAME=VALUE with NAME of letters, digits and '_'"
        )),
    }
}

fn parse_set(value: &str) -> Result<String, String> {
    match value.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(value.to_string()),
        _ => Err(format!("{value:?} is not KEY=VALUE")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

/// How `apply` and `diff` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReportFormat {
    Text,
    Json,
    /// A pull-request comment (`diff` only).
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether stdout gets ANSI colors.
    pub(crate) fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stdout().is_terminal()
            }
        }
    }
}

impl SyncArgs {
    /// The largest and deepest manifest file the flags allow.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_file_bytes: self.max_file_mib << 20,
            max_depth: self.max_depth,
        }
    }

    /// Where the manifests come from: PATHs or a Git revision, not both.
    pub(crate) fn check_source(&self) -> Result<(), String> {
        match (
            &self.revision.git,
            &self.chart.helm_repo,
            self.paths.is_empty(),
        ) {
            (Some(_), _, false) => Err("give PATHs or --git, not both".into()),
            (_, Some(_), false) => Err("give PATHs or --helm-repo, not both".into()),
            (Some(_), Some(_), _) => Err("give --git or --helm-repo, not both".into()),
            _ => Ok(()),
        }
    }

    /// The age identities of `--age-key-file` (`SOPS_AGE_KEY_FILE`) and of the
    /// `SOPS_AGE_KEY` variable, as sops reads them.
    pub(crate) fn age_keys(&self) -> Result<converge::sops::AgeKeys, converge::sops::KeyError> {
        let mut keys = converge::sops::AgeKeys::default();
        for file in &self.age_key_file {
            keys.add_file(file)?;
        }
        if let Ok(text) = std::env::var("SOPS_AGE_KEY") {
            let text = zeroize::Zeroizing::new(text);
            keys.add(&text, "SOPS_AGE_KEY")?;
        }
        Ok(keys)
    }

    /// The drift rules the flags describe.
    pub(crate) fn drift_rules(&self) -> DriftRules {
        DriftRules {
            managers: DriftManagers::named_or_default(self.drift_managers.as_deref()),
            ignore: IgnoreRules(self.ignore.clone()),
            recreate: Recreate::allowed_for_all(self.recreate),
        }
    }

    /// The ApplySet name: `--name`, else derived from the first path (`k8s/shop/`
    /// → `shop`, `app.yaml` → `app`).
    pub(crate) fn applyset_name(&self) -> Result<String, String> {
        if let Some(name) = &self.name {
            return Ok(name.clone());
        }
        if let Some(url) = &self.revision.git {
            return revision_name(url, self.revision.path.as_deref());
        }
        if let Some(chart) = &self.chart.chart {
            return parse_name(&chart.to_ascii_lowercase().replace(['_', '.'], "-"))
                .map_err(|e| format!("{e}; pass --name"));
        }
        let first = self.paths.first().ok_or("no path given")?;
        let derived = derive_name(first).ok_or_else(|| {
            format!(
                "cannot derive an ApplySet name from {}; pass --name",
                first.display()
            )
        })?;
        parse_name(&derived).map_err(|e| format!("{e}; pass --name"))
    }
}

/// The ApplySet name of a revision: its --path's last directory, else the
/// repository's name (`https://host/acme/deploy.git` → `deploy`).
fn revision_name(url: &str, path: Option<&Path>) -> Result<String, String> {
    let from_path = path
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let from_url = || {
        let trimmed = url.trim_end_matches('/');
        let last = trimmed.rsplit(['/', ':']).next().unwrap_or(trimmed);
        let last = last.strip_suffix(".git").unwrap_or(last);
        match last {
            "" | "." | ".." => derive_name(Path::new(url)),
            _ => Some(last.to_string()),
        }
    };
    let derived = from_path
        .or_else(from_url)
        .ok_or_else(|| format!("cannot derive an ApplySet name from {url}; pass --name"))?;
    let name: String = derived
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    parse_name(name.trim_matches('-')).map_err(|e| format!("{e}; pass --name"))
}

/// A name from a path: the directory's own name, or the file's stem.
fn derive_name(path: &Path) -> Option<String> {
    let absolute = std::path::absolute(path).ok()?;
    let meaningful = if absolute.is_file() {
        absolute.file_stem()?.to_owned()
    } else {
        absolute.components().next_back()?.as_os_str().to_owned()
    };
    let name: String = meaningful
        .to_string_lossy()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    Some(name.trim_matches('-').to_string())
}

/// ApplySet names are DNS labels, as the daemon's source names are: the same
/// ApplySet can be managed by either.
fn parse_name(name: &str) -> Result<String, String> {
    if is_dns_label(name) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "invalid ApplySet name {name:?}: use 1-63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

/// A Lease holder identity: any text, but not empty or blank.
fn parse_identity(id: &str) -> Result<String, String> {
    if id.trim().is_empty() {
        return Err("the identity must not be empty".into());
    }
    Ok(id.to_string())
}

/// A duration that is more than zero.
fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero, e.g. 60s".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// The version line printed by `converge version`.
pub(crate) fn version_line() -> String {
    format!(
        "converge {} ({} {})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// `--max-depth`: 1 to [`MAX_DEPTH_ALLOWED`] levels.
fn parse_depth(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(depth @ 1..=MAX_DEPTH_ALLOWED) => Ok(depth),
        _ => Err(format!("use a whole number from 1 to {MAX_DEPTH_ALLOWED}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn drift_flags_make_drift_rules() {
        let parse = |args: &[&str]| -> Result<DriftRules, clap::Error> {
            let cli = Cli::try_parse_from([&["converge", "diff", "k8s/"], args].concat())?;
            match cli.command {
                Command::Diff(diff) => Ok(diff.sync.drift_rules()),
                _ => panic!("not diff"),
            }
        };
        let defaults = parse(&[]).expect("no flags");
        assert_eq!(defaults, DriftRules::default());
        let rules = parse(&[
            "--ignore",
            "Deployment:/spec/replicas",
            "--ignore=/metadata/labels/x",
            "--drift-managers=kubectl-edit,helm",
            "--recreate",
        ])
        .expect("valid flags");
        assert_eq!(rules.ignore.0.len(), 2);
        assert_eq!(
            rules.managers.names().collect::<Vec<_>>(),
            ["helm", "kubectl-edit"]
        );
        assert_eq!(rules.recreate, Recreate::Allowed);
        let none = parse(&["--drift-managers="]).expect("empty list");
        assert_eq!(none.managers.names().count(), 0);
        let bad = parse(&["--ignore", "Deployment:spec.replicas"]).unwrap_err();
        assert!(bad.to_string().contains("JSON pointer"), "{bad}");
    }

    #[test]
    fn request_timeout_is_a_positive_duration() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["converge", "diff", "k8s/"];
            args.extend(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Diff(diff) => diff.sync.request_timeout,
                other => panic!("not diff: {other:?}"),
            })
        };
        assert_eq!(parse(&[]).ok(), Some(std::time::Duration::from_secs(60)));
        let five = parse(&["--request-timeout", "5m"]).ok();
        assert_eq!(five, Some(std::time::Duration::from_secs(300)));
        assert!(parse(&["--request-timeout", "0s"]).is_err());
        assert!(parse(&["--request-timeout", "soon"]).is_err());
    }

    #[test]
    fn version_names_the_crate_version() {
        assert!(version_line().contains(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn applyset_name_defaults_to_the_directory_or_file_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shop = dir.path().join("My_Shop");
        std::fs::create_dir(&shop).expect("mkdir");
        std::fs::write(shop.join("app.yaml"), "").expect("write");
        let args = |paths: Vec<PathBuf>, name: Option<&str>| SyncArgs {
            paths,
            name: name.map(str::to_string),
            namespace: None,
            prune: false,
            allow_mass_prune: false,
            create_namespace: false,
            adopt: false,
            kubeconfig: None,
            context: None,
            request_timeout: std::time::Duration::from_secs(60),
            output: ReportFormat::Text,
            color: ColorChoice::Never,
            health: Vec::new(),
            ignore: Vec::new(),
            drift_managers: None,
            recreate: false,
            max_file_mib: 16,
            max_depth: 100,
            age_key_file: Vec::new(),
            render: RenderArgs::default(),
            revision: RevisionArgs::default(),
            chart: ChartArgs::default(),
        };
        assert_eq!(
            args(vec![shop.clone()], None).applyset_name(),
            Ok("my-shop".into())
        );
        assert_eq!(
            args(vec![shop.join("app.yaml")], None).applyset_name(),
            Ok("app".into())
        );
        assert_eq!(args(vec![shop], Some("x")).applyset_name(), Ok("x".into()));
    }

    #[test]
    fn wait_takes_a_timeout_and_excludes_dry_run() {
        let cli = Cli::try_parse_from(["converge", "apply", "x", "--wait", "--timeout", "90s"])
            .expect("valid");
        let Command::Apply(args) = cli.command else {
            panic!("not apply")
        };
        assert!(args.wait);
        assert_eq!(args.timeout, std::time::Duration::from_secs(90));
        // The same parser as config.toml's interval.
        let cli =
            Cli::try_parse_from(["converge", "apply", "x", "--wait", "--timeout", "5 minutes"])
                .expect("valid");
        let Command::Apply(args) = cli.command else {
            panic!("not apply")
        };
        assert_eq!(args.timeout, std::time::Duration::from_secs(300));
        assert!(Cli::try_parse_from(["converge", "apply", "x", "--wait", "--dry-run"]).is_err());
        assert!(Cli::try_parse_from(["converge", "apply", "x", "--timeout", "1m"]).is_err());
        assert!(
            Cli::try_parse_from(["converge", "apply", "x", "--wait", "--timeout", "soon"]).is_err()
        );
    }

    #[test]
    fn a_git_revision_replaces_paths_for_diff() {
        let cli = Cli::try_parse_from([
            "converge",
            "diff",
            "--git",
            "https://example.com/acme/deploy.git",
            "--ref",
            "feature",
            "--base",
            "main",
            "-o",
            "markdown",
            "--var",
            "ENV=prod",
        ])
        .expect("valid");
        let Command::Diff(diff) = cli.command else {
            panic!("not diff")
        };
        assert_eq!(diff.base.as_deref(), Some("main"));
        assert_eq!(diff.sync.output, ReportFormat::Markdown);
        assert_eq!(diff.sync.render.vars, [("ENV".into(), "prod".into())]);
        assert_eq!(diff.sync.applyset_name(), Ok("deploy".into()));
        assert_eq!(diff.sync.check_source(), Ok(()));
        let both = Cli::try_parse_from(["converge", "diff", "k8s/", "--git", "."]).expect("parsed");
        let Command::Diff(both) = both.command else {
            panic!("not diff")
        };
        assert!(both.sync.check_source().is_err());
        // Neither PATHs nor --git; both; --base or --ref without --git; a bad var.
        for bad in [
            &["converge", "diff"][..],
            &["converge", "diff", "k8s/", "--base", "main"],
            &["converge", "diff", "k8s/", "--ref", "main"],
            &["converge", "diff", "k8s/", "--var", "1X=y"],
            &["converge", "diff", "--git", ".", "--max-bytes", "10"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_revision_is_named_after_its_path_or_repository() {
        let name = |url: &str, path: Option<&str>| revision_name(url, path.map(Path::new));
        assert_eq!(name("https://h/acme/deploy.git", None), Ok("deploy".into()));
        assert_eq!(name("git@h:acme/Deploy_It", None), Ok("deploy-it".into()));
        assert_eq!(
            name("https://h/acme/deploy", Some("apps/shop")),
            Ok("shop".into())
        );
    }

    #[test]
    fn get_completions_and_man_parse() {
        let cli = Cli::try_parse_from(["converge", "get", "objects", "shop", "-o", "json"])
            .expect("valid");
        let Command::Get(get) = cli.command else {
            panic!("not get")
        };
        assert_eq!(get.output, OutputFormat::Json);
        assert!(matches!(get.what, GetWhat::Objects { source: Some(ref s) } if s == "shop"));
        assert!(Cli::try_parse_from(["converge", "completions", "tcsh"]).is_err());
        assert!(Cli::try_parse_from(["converge", "completions", "fish"]).is_ok());
        assert!(Cli::try_parse_from(["converge", "man", "--out-dir", "x"]).is_ok());
    }

    #[test]
    fn names_are_validated() {
        assert!(parse_name("shop-1").is_ok());
        for bad in ["", "Shop", "-a", "a-", "a_b", &"x".repeat(64)] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
        let err = Cli::try_parse_from(["converge", "diff", "x", "--name", "Bad_Name"])
            .expect_err("invalid");
        assert!(err.to_string().contains("invalid ApplySet name"), "{err}");
    }
}
