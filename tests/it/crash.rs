//! `kill -9` of converge in the middle of an apply and in the middle of a prune,
//! then a rerun: everything converges and no owned object is orphaned. The
//! invariant that makes this so (KEP-3659): the ApplySet parent records the
//! group-kind of every member before the member is written, so whatever a killed
//! run left behind is found, and pruned, by the next.

use crate::common::fault_proxy::FaultProxy;
use crate::common::process::Running;
use crate::common::{Manifests, TestEnv};
use crate::faults::converge;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

const KINDS: &str = "configmaps,secrets,serviceaccounts,namespaces";

/// A Namespace `{ns}-extra` with `accounts` ServiceAccounts, and `configmaps`
/// ConfigMaps and `secrets` Secrets in the test's namespace.
fn manifests(env: &TestEnv, extra: Option<usize>, configmaps: usize, secrets: usize) -> String {
    let mut text = String::new();
    if let Some(accounts) = extra {
        let extra = format!("{}-extra", env.ns);
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {extra}}}\n"
        );
        for i in 0..accounts {
            let _ = write!(
                text,
                "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa-{i}, namespace: {extra}}}\n"
            );
        }
    }
    for i in 0..configmaps {
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\ndata: {{value: v{i}}}\n"
        );
    }
    for i in 0..secrets {
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: secret-{i}}}\nstringData: {{value: s{i}}}\n"
        );
    }
    text
}

/// The ApplySet's parent: its id and the group-kinds it records.
fn parent(env: &TestEnv) -> Option<(String, BTreeSet<String>)> {
    let name = format!("converge-{}", env.ns);
    let template = "jsonpath={.metadata.labels.applyset\\.kubernetes\\.io/id} \
                    {.metadata.annotations.applyset\\.kubernetes\\.io/contains-group-kinds}";
    let out = env.kubectl_output(
        &["get", "configmap", &name, "-n", &env.ns, "-o", template],
        None,
    );
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (id, kinds) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    let kinds = kinds
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    Some((id.to_string(), kinds.collect()))
}

/// Every live object labelled as a member of `id` (not being deleted), as
/// `Kind namespace/name`.
fn members(env: &TestEnv, id: &str) -> BTreeSet<String> {
    let selector = format!("applyset.kubernetes.io/part-of={id}");
    live(env, &selector)
}

/// Live objects of [`KINDS`] matching `selector` in any namespace, not being
/// deleted, as `Kind namespace/name`.
fn live(env: &TestEnv, selector: &str) -> BTreeSet<String> {
    let template = "jsonpath={range .items[*]}{.kind} {.metadata.namespace}/{.metadata.name} \
                    {.metadata.deletionTimestamp}{\"\\n\"}{end}";
    let out = env.kubectl(&["get", KINDS, "-A", "-l", selector, "-o", template]);
    out.lines()
        .filter_map(|line| {
            let (object, deleting) = line.rsplit_once(' ')?;
            deleting.is_empty().then(|| object.to_string())
        })
        .collect()
}

/// Objects labelled as members of the test's ApplySet (with or without a parent).
fn labelled(env: &TestEnv) -> BTreeSet<String> {
    match parent(env) {
        Some((id, _)) => members(env, &id),
        None => BTreeSet::new(),
    }
}

/// The invariant a kill must never break: if anything carries the ApplySet's label,
/// the parent exists and records its kind.
fn assert_every_member_kind_recorded(env: &TestEnv, when: &str) {
    let Some((id, kinds)) = parent(env) else {
        // Without a parent the id is unknown: look for the test's own objects
        // among everything labelled as any ApplySet's member.
        let ours: Vec<String> = live(env, "applyset.kubernetes.io/part-of")
            .into_iter()
            .filter(|object| object.contains(&env.ns))
            .collect();
        assert!(
            ours.is_empty(),
            "{when}: members without a parent: {ours:?}"
        );
        return;
    };
    for member in members(env, &id) {
        let kind = member.split(' ').next().unwrap_or("");
        assert!(
            kinds.contains(kind),
            "{when}: {member} is a member but the parent records only {kinds:?}: \
             a later run could not prune it"
        );
    }
}

/// The objects the manifests of [`manifests`] describe, as [`members`] lists them.
fn desired(
    env: &TestEnv,
    extra: Option<usize>,
    configmaps: usize,
    secrets: usize,
) -> BTreeSet<String> {
    let ns = &env.ns;
    let mut set = BTreeSet::new();
    if let Some(accounts) = extra {
        set.insert(format!("Namespace /{ns}-extra"));
        set.extend((0..accounts).map(|i| format!("ServiceAccount {ns}-extra/sa-{i}")));
    }
    set.extend((0..configmaps).map(|i| format!("ConfigMap {ns}/cm-{i}")));
    set.extend((0..secrets).map(|i| format!("Secret {ns}/secret-{i}")));
    set
}

fn apply(env: &TestEnv, kubeconfig: Option<&Path>, dir: &Manifests) -> Running {
    Running::spawn(converge(
        env,
        kubeconfig,
        &["-v", "apply", dir.arg(), "--prune"],
    ))
}

/// Kills `run` at its first stderr line containing `moment`.
fn kill_at(mut run: Running, moment: &str) {
    assert!(
        run.wait_for_line(moment, Duration::from_secs(60)),
        "converge never reached {moment:?}; the kill proves nothing"
    );
    run.kill();
    let _ = run.finish();
}

/// After a rerun: exactly the desired objects are members, and a diff is clean.
fn assert_converged(env: &TestEnv, dir: &Manifests, want: &BTreeSet<String>) {
    let have = labelled(env);
    let orphans: Vec<_> = have.difference(want).collect();
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(
        orphans.is_empty() && missing.is_empty(),
        "orphaned: {orphans:?}\nmissing: {missing:?}"
    );
    let out = converge(env, None, &["diff", dir.arg(), "--prune"])
        .output()
        .expect("run converge diff");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the extra Namespace a test may leave (the test namespace goes by itself).
struct ExtraNamespace<'a>(&'a TestEnv);

impl Drop for ExtraNamespace<'_> {
    fn drop(&mut self) {
        let extra = format!("{}-extra", self.0.ns);
        let args = [
            "delete",
            "namespace",
            &extra,
            "--ignore-not-found",
            "--wait=false",
        ];
        let _ = self.0.kubectl_command(&args).output();
    }
}

#[test]
fn kill_during_a_large_apply_then_rerun_orphans_nothing() {
    let env = TestEnv::new("crash-apply");
    let _extra = ExtraNamespace(&env);
    let dir = Manifests::with("all.yaml", &manifests(&env, Some(50), 500, 100));
    // Latency widens every gap between two writes, so the kill lands in one.
    let proxy = FaultProxy::start(env.apiserver_addr());
    proxy.set_latency(Duration::from_millis(100));
    let kubeconfig = env.kubeconfig_via(dir.path(), &proxy.url());

    // Killed after the first write (the Namespace, stage one), then again in the
    // middle of the ConfigMaps (stage two): each run wrote something and left
    // something unwritten, or the kill proved nothing.
    let total = desired(&env, Some(50), 500, 100).len();
    let mut before = 0;
    // (moment, the members it is in the middle of, how many of them there are)
    for (moment, kind, all) in [
        ("applied", "", total),
        ("object=ConfigMap/", "ConfigMap ", 500),
    ] {
        kill_at(apply(&env, Some(&kubeconfig), &dir), moment);
        assert_every_member_kind_recorded(&env, &format!("killed at {moment:?}"));
        let members = labelled(&env);
        let written = members.len();
        let of_kind = members.iter().filter(|m| m.starts_with(kind)).count();
        println!("killed at {moment:?} with {written} of {total} objects written");
        assert!(
            written > before && of_kind > 0 && of_kind < all,
            "not killed mid-apply at {moment:?}: {written} of {total} objects written \
             ({before} before this run), {of_kind} of {all} {kind:?}"
        );
        before = written;
    }
    apply(&env, None, &dir).finish().assert_success("the rerun");
    assert_converged(&env, &dir, &desired(&env, Some(50), 500, 100));

    // The next revision drops the extra Namespace, its ServiceAccounts and 100
    // ConfigMaps: all of it is pruned.
    dir.write("all.yaml", &manifests(&env, None, 400, 100));
    apply(&env, None, &dir)
        .finish()
        .assert_success("the smaller revision");
    assert_converged(&env, &dir, &desired(&env, None, 400, 100));
}

#[test]
fn kill_during_a_prune_then_rerun_finishes_it() {
    let env = TestEnv::new("crash-prune");
    let dir = Manifests::with("all.yaml", &manifests(&env, None, 600, 0));
    apply(&env, None, &dir)
        .finish()
        .assert_success("the first apply");

    dir.write("all.yaml", &manifests(&env, None, 350, 0));
    kill_at(apply(&env, None, &dir), "pruned");
    assert_every_member_kind_recorded(&env, "killed during the prune");
    let left = labelled(&env).len();
    println!("killed with {} of 250 prunes done", 600 - left);
    assert!(
        left > 350 && left < 600,
        "not killed mid-prune: {left} left"
    );

    apply(&env, None, &dir).finish().assert_success("the rerun");
    assert_converged(&env, &dir, &desired(&env, None, 350, 0));
}
