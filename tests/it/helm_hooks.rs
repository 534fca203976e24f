//! converge's handling of Helm hooks against the real Helm (issue #22, point 7): each
//! chart of tests/fixtures/hook-charts/ is installed, then upgraded, by `helm` in one
//! namespace and applied by `converge apply --release` in another, each client
//! with an identity of its own, and what each did to the hook objects is read back
//! from the API server's audit log, not from either tool's output: the successful
//! creates in order, the successful deletes in order, and what survives.
//!
//! Helm's half is pinned (what Helm v3.22 does with these charts); converge's must
//! be the same. A test collects every difference of its chart and fails with all
//! of them, each printing both sequences.

use crate::common::audit::{AuditEvent, Identity};
use crate::common::{TestEnv, describe, eventually, repo_root};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

/// The release name on both sides, so that the objects' names match.
const RELEASE: &str = "hk";
/// `converge apply` when a hook or a wave failed the sync.
const SYNC_FAILED: i32 = 3;
/// The kinds the charts are made of.
const KINDS: &str = "configmaps,serviceaccounts,roles,rolebindings,jobs";
/// Objects of a namespace that neither tool's hooks are about: the namespace's own,
/// and converge's ApplySet parent (`converge-<name>`). Helm's release Secret is not
/// among [`KINDS`].
const IGNORED: &[&str] = &[
    "configmap/kube-root-ca.crt",
    "serviceaccount/default",
    "configmap/converge-hk",
];
/// How long both tools may take for a step, and the tests to see deletes settle.
const TIMEOUT: &str = "2m";
const SETTLE: Duration = Duration::from_secs(60);

/// One chart and what Helm does with it.
struct Case {
    /// The namespace's base name; the identities are named after the namespace.
    test: &'static str,
    chart: &'static str,
    /// The chart's hook objects, as the audit log names them (`resource/name`).
    hooks: &'static [&'static str],
    /// Jobs the TTL controller deletes as soon as they finish: whether the tool's
    /// own delete finds them is a race, so their deletes are not compared (that
    /// they are gone is).
    ttl_jobs: &'static [&'static str],
    install: Expect,
    /// None: the install fails, and there is no upgrade.
    upgrade: Option<Expect>,
}

/// What Helm does in one step, and what is left afterwards.
struct Expect {
    created: &'static [&'static str],
    deleted: &'static [&'static str],
    /// `kubectl get -o name`, sorted, without [`IGNORED`].
    survivors: &'static [&'static str],
}

/// What one client did to the hook objects in one step, from the audit log.
#[derive(Debug, PartialEq)]
struct Trail {
    created: Vec<String>,
    deleted: Vec<String>,
}

impl Trail {
    fn expected(expect: &Expect) -> Self {
        let owned = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        Trail {
            created: owned(expect.created),
            deleted: owned(expect.deleted),
        }
    }
}

/// Successful, persisted writes of hook objects, in the order they completed: a
/// create is a POST, or an apply answered 201 Created; a delete is a DELETE that
/// found the object (a 404 of a before-hook-creation delete is not one).
fn trail(events: &[AuditEvent], case: &Case) -> Trail {
    let mut writes: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.succeeded() && !e.is_dry_run())
        .filter(|e| case.hooks.contains(&e.object().as_str()))
        .collect();
    writes.sort_by(|a, b| a.stage_timestamp.cmp(&b.stage_timestamp));
    let created = writes
        .iter()
        .filter(|e| e.verb == "create" || (e.verb == "patch" && e.code == 201))
        .map(|e| e.object())
        .collect();
    let deleted = writes
        .iter()
        .filter(|e| e.verb == "delete")
        .map(|e| e.object())
        .filter(|o| !case.ttl_jobs.contains(&o.as_str()))
        .collect();
    Trail { created, deleted }
}

fn show(trail: &Trail) -> String {
    format!(
        "  created: {}\n  deleted: {}",
        trail.created.join(", "),
        trail.deleted.join(", ")
    )
}

/// One tool's side: its identity, its namespace, and how much of its audit trail
/// earlier steps have read.
struct Side {
    identity: Identity,
    ns: String,
    read: usize,
}

impl Side {
    /// The hook writes of the step since the last call.
    fn step_trail(&mut self, case: &Case) -> Trail {
        let events = self.identity.events(&self.ns);
        let new = events.get(self.read..).unwrap_or_default();
        self.read = events.len();
        trail(new, case)
    }

    fn survivors(&self, env: &TestEnv) -> Vec<String> {
        let names = env.kubectl(&["get", KINDS, "-n", &self.ns, "-o", "name"]);
        let mut names: Vec<String> = names
            .lines()
            .filter(|n| !IGNORED.contains(n))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }
}

/// One chart, applied by both tools side by side; differences collected.
struct Duel {
    case: &'static Case,
    env: TestEnv,
    helm: Side,
    converge: Side,
    differences: Vec<String>,
}

impl Duel {
    /// Helm in the test's namespace, converge in a second one.
    fn new(case: &'static Case) -> Self {
        let env = TestEnv::new(case.test);
        let converge_ns = format!("{}-c", env.ns);
        env.kubectl(&["create", "namespace", &converge_ns]);
        env.kubectl(&["label", "namespace", &converge_ns, "converge.dev/test=true"]);
        let side = |tool: &str, ns: &str| Side {
            identity: Identity::new(&env, &format!("{tool}-{}", env.ns)),
            ns: ns.to_string(),
            read: 0,
        };
        let (helm, converge) = (side("helm", &env.ns), side("converge", &converge_ns));
        Duel {
            case,
            env,
            helm,
            converge,
            differences: Vec::new(),
        }
    }

    fn chart(&self) -> PathBuf {
        repo_root()
            .join("tests/fixtures/hook-charts")
            .join(self.case.chart)
    }

    /// `helm install|upgrade hk CHART --wait` as the helm identity.
    fn helm(&self, command: &str, set: &[&str]) -> Output {
        assert!(matches!(command, "install" | "upgrade"), "{command}");
        let mut helm = std::process::Command::new("helm");
        helm.arg(command)
            .arg(RELEASE)
            .arg(self.chart())
            .args(["--namespace", &self.helm.ns, "--wait", "--timeout", TIMEOUT])
            .args(["--kubeconfig", self.helm.identity.kubeconfig_arg()]);
        for value in set {
            helm.args(["--set", value]);
        }
        helm.output()
            .expect("run helm (hack/controlplane.sh env puts it on PATH)")
    }

    /// `converge apply CHART --release hk --wait` as the converge identity.
    fn converge(&self, set: &[&str]) -> Output {
        let mut converge = self.env.converge_command();
        converge
            .env("KUBECONFIG", &self.converge.identity.kubeconfig)
            .arg("apply")
            .arg(self.chart())
            .args(["--release", RELEASE, "--name", RELEASE])
            .args([
                "--namespace",
                &self.converge.ns,
                "--wait",
                "--timeout",
                TIMEOUT,
            ]);
        for value in set {
            converge.args(["--set", value]);
        }
        converge.output().expect("run converge apply")
    }

    /// Runs one step (`install` or `upgrade`) on both sides and compares what they
    /// did. `fails`: the step is expected to fail on both.
    fn step(&mut self, step: &str, expect: &Expect, set: &[&str], fails: bool) {
        let (helm_code, helm) = self.helm_step(step, expect, set, fails);
        let converge = self.converge_step(step, set, fails, helm_code);
        if converge != helm {
            self.differences.push(format!(
                "{step}: the hooks' creates and deletes differ\nhelm:\n{}\nconverge:\n{}",
                show(&helm),
                show(&converge)
            ));
        }
        self.compare_survivors(step, expect);
    }

    /// Helm's half, which must do what it did when the test was written: its exit
    /// code and its trail.
    fn helm_step(
        &mut self,
        step: &str,
        expect: &Expect,
        set: &[&str],
        fails: bool,
    ) -> (Option<i32>, Trail) {
        let out = self.helm(step, set);
        println!("helm {step}: {}", describe(&out));
        assert_eq!(
            out.status.success(),
            !fails,
            "helm {step}: {}",
            describe(&out)
        );
        let helm = self.helm.step_trail(self.case);
        println!("{step}, helm:\n{}", show(&helm));
        let pinned = Trail::expected(expect);
        assert!(
            helm == pinned,
            "helm {step} did not do what it did when this test was written (the Helm half \
             is pinned):\nhelm now:\n{}\nhelm then:\n{}",
            show(&helm),
            show(&pinned)
        );
        (out.status.code(), helm)
    }

    /// converge's half: a wrong exit code is a difference, not a failure yet.
    fn converge_step(
        &mut self,
        step: &str,
        set: &[&str],
        fails: bool,
        helm_code: Option<i32>,
    ) -> Trail {
        let out = self.converge(set);
        println!("converge apply ({step}): {}", describe(&out));
        let expected = if fails { SYNC_FAILED } else { 0 };
        if out.status.code() != Some(expected) {
            self.differences.push(format!(
                "{step}: converge exited {:?}, expected {expected} (helm exited {helm_code:?}): {}",
                out.status.code(),
                describe(&out)
            ));
        }
        let converge = self.converge.step_trail(self.case);
        println!("{step}, converge:\n{}", show(&converge));
        converge
    }

    /// What is left in both namespaces once the deletes (Helm's, converge's, the
    /// TTL and garbage collectors') have settled.
    fn compare_survivors(&mut self, step: &str, expect: &Expect) {
        let expected: Vec<String> = expect.survivors.iter().map(|s| s.to_string()).collect();
        let helm_settled = eventually(SETTLE, || self.helm.survivors(&self.env) == expected);
        assert!(
            helm_settled.is_some(),
            "after helm's {step}: {:?}, expected {expected:?}",
            self.helm.survivors(&self.env)
        );
        let converge_settled =
            eventually(SETTLE, || self.converge.survivors(&self.env) == expected);
        if converge_settled.is_none() {
            self.differences.push(format!(
                "{step}: the surviving objects differ\nhelm:     {expected:?}\nconverge: {:?}",
                self.converge.survivors(&self.env)
            ));
        }
    }

    /// Install, then (unless the install fails) upgrade with another message.
    fn run(mut self) {
        let case = self.case;
        self.step("install", &case.install, &[], case.upgrade.is_none());
        if let Some(upgrade) = &case.upgrade {
            self.step("upgrade", upgrade, &["message=two"], false);
        }
        assert!(
            self.differences.is_empty(),
            "converge differs from helm on chart {}:\n\n{}",
            case.chart,
            self.differences.join("\n\n")
        );
    }
}

impl Drop for Duel {
    fn drop(&mut self) {
        let _ = self
            .env
            .kubectl_command(&["delete", "namespace", &self.converge.ns, "--wait=false"])
            .output();
    }
}

/// ingress-nginx's admission patch: ServiceAccount, Role and RoleBinding (weight
/// -5, one name: by kind) then the Job, all post-install and deleted once they all
/// succeeded, in reverse order.
static POST_INSTALL_RBAC: Case = Case {
    test: "hooks-rbac",
    chart: "post-install-rbac",
    hooks: &[
        "serviceaccounts/hk-admission",
        "roles/hk-admission",
        "rolebindings/hk-admission",
        "jobs/hk-admission-patch",
    ],
    ttl_jobs: &[],
    install: Expect {
        created: &[
            "serviceaccounts/hk-admission",
            "roles/hk-admission",
            "rolebindings/hk-admission",
            "jobs/hk-admission-patch",
        ],
        deleted: &[
            "jobs/hk-admission-patch",
            "rolebindings/hk-admission",
            "roles/hk-admission",
            "serviceaccounts/hk-admission",
        ],
        survivors: &["configmap/hk-settings"],
    },
    upgrade: Some(Expect {
        created: &[
            "serviceaccounts/hk-admission",
            "roles/hk-admission",
            "rolebindings/hk-admission",
            "jobs/hk-admission-patch",
        ],
        deleted: &[
            "jobs/hk-admission-patch",
            "rolebindings/hk-admission",
            "roles/hk-admission",
            "serviceaccounts/hk-admission",
        ],
        survivors: &["configmap/hk-settings"],
    }),
};

#[test]
fn post_install_rbac_hooks_are_created_and_deleted_as_helm_does() {
    Duel::new(&POST_INSTALL_RBAC).run();
}

/// cert-manager's startupapicheck: RBAC hooks of both phases, created and deleted
/// around each phase's Job; the Jobs removed by their TTL.
static TTL_JOB: Case = Case {
    test: "hooks-ttl",
    chart: "ttl-job",
    hooks: &[
        "serviceaccounts/hk-startupapicheck",
        "roles/hk-startupapicheck",
        "rolebindings/hk-startupapicheck",
        "jobs/hk-preflight",
        "jobs/hk-startupapicheck",
    ],
    ttl_jobs: &["jobs/hk-preflight", "jobs/hk-startupapicheck"],
    install: Expect {
        created: &[
            "serviceaccounts/hk-startupapicheck",
            "roles/hk-startupapicheck",
            "rolebindings/hk-startupapicheck",
            "jobs/hk-preflight",
            "serviceaccounts/hk-startupapicheck",
            "roles/hk-startupapicheck",
            "rolebindings/hk-startupapicheck",
            "jobs/hk-startupapicheck",
        ],
        deleted: &[
            "rolebindings/hk-startupapicheck",
            "roles/hk-startupapicheck",
            "serviceaccounts/hk-startupapicheck",
            "rolebindings/hk-startupapicheck",
            "roles/hk-startupapicheck",
            "serviceaccounts/hk-startupapicheck",
        ],
        survivors: &["configmap/hk-settings"],
    },
    upgrade: Some(Expect {
        created: &[
            "serviceaccounts/hk-startupapicheck",
            "roles/hk-startupapicheck",
            "rolebindings/hk-startupapicheck",
            "jobs/hk-preflight",
            "serviceaccounts/hk-startupapicheck",
            "roles/hk-startupapicheck",
            "rolebindings/hk-startupapicheck",
            "jobs/hk-startupapicheck",
        ],
        deleted: &[
            "rolebindings/hk-startupapicheck",
            "roles/hk-startupapicheck",
            "serviceaccounts/hk-startupapicheck",
            "rolebindings/hk-startupapicheck",
            "roles/hk-startupapicheck",
            "serviceaccounts/hk-startupapicheck",
        ],
        survivors: &["configmap/hk-settings"],
    }),
};

#[test]
fn ttl_job_hooks_and_their_rbac_are_created_and_deleted_as_helm_does() {
    Duel::new(&TTL_JOB).run();
}

/// A `pre-upgrade` Job: not run by the install, run once by the upgrade, kept (the
/// default delete policy, before-hook-creation).
static PRE_UPGRADE_ONLY: Case = Case {
    test: "hooks-pre-upgrade",
    chart: "pre-upgrade-only",
    hooks: &["jobs/hk-upgrade-check"],
    ttl_jobs: &[],
    install: Expect {
        created: &[],
        deleted: &[],
        survivors: &["configmap/hk-settings"],
    },
    upgrade: Some(Expect {
        created: &["jobs/hk-upgrade-check"],
        deleted: &[],
        survivors: &["configmap/hk-settings", "job.batch/hk-upgrade-check"],
    }),
};

#[test]
fn a_pre_upgrade_hook_runs_on_upgrade_only_as_helm_does() {
    Duel::new(&PRE_UPGRADE_ONLY).run();
}

/// A failing pre-install Job (hook-failed) after a ConfigMap hook (hook-succeeded):
/// both created, the Job deleted because it failed, then the ConfigMap because it
/// had succeeded; the release's ConfigMap never written.
static FAILING_HOOK: Case = Case {
    test: "hooks-failing",
    chart: "failing-hook",
    hooks: &["configmaps/hk-precheck", "jobs/hk-migrate"],
    ttl_jobs: &[],
    install: Expect {
        created: &["configmaps/hk-precheck", "jobs/hk-migrate"],
        deleted: &["jobs/hk-migrate", "configmaps/hk-precheck"],
        survivors: &[],
    },
    upgrade: None,
};

#[test]
fn a_failing_hook_fails_the_install_and_is_deleted_as_helm_does() {
    Duel::new(&FAILING_HOOK).run();
}
