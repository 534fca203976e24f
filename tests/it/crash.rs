//! `kill -9` of converge in the middle of an apply and in the middle of a prune,
//! then a rerun: everything converges and no owned object is orphaned; the same for
//! `converge run` killed mid-reconcile and restarted, which creates nothing twice
//! and never brings back what the new revision dropped (the audit log tells). The
//! invariant that makes this so (KEP-3659): the ApplySet parent records the
//! group-kind of every member before the member is written, so whatever a killed
//! run left behind is found, and pruned, by the next.

use crate::common::audit::{AuditEvent, Identity};
use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::fault_proxy::FaultProxy;
use crate::common::process::Running;
use crate::common::{Manifests, TestEnv, eventually};
use crate::faults::converge;
use std::collections::{BTreeMap, BTreeSet};
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

/// A daemon with `identity`'s credentials (through `proxy` if given), converging
/// `dir` into the test's namespace under the ApplySet the CLI helpers use.
fn daemon(env: &TestEnv, dir: &Manifests, identity: &Identity, via: Option<&Path>) -> Daemon {
    let kubeconfig = via.unwrap_or(&identity.kubeconfig);
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 kubeconfig path");
    let config = dir_config(dir.path(), "1h", Drift::Heal);
    let daemon = Daemon::start_with_env(env, &config, &[], &[("KUBECONFIG", kubeconfig)]);
    daemon.wait_ready(Duration::from_secs(60));
    daemon
}

/// The identity's writes that created a ConfigMap or Secret (201), by
/// `resource/name` (Events have generated names).
fn creations(events: &[AuditEvent]) -> BTreeMap<String, usize> {
    let mut created = BTreeMap::new();
    let members = |e: &&AuditEvent| ["configmaps", "secrets"].contains(&e.resource.as_str());
    for event in events
        .iter()
        .filter(members)
        .filter(|e| e.is_write() && e.code == 201)
    {
        *created.entry(event.object()).or_default() += 1;
    }
    created
}

#[test]
fn kill_the_daemon_mid_reconcile_then_restart_finishes_without_orphans_or_recreations() {
    let env = TestEnv::new("crash-daemon");
    let dir = Manifests::with("all.yaml", &manifests(&env, None, 100, 100));
    let identity = Identity::new(&env, &format!("crash-{}", env.ns));
    // Latency widens every gap between two writes, so the kill lands in one.
    let proxy = FaultProxy::start(env.apiserver_addr());
    let via = Manifests::new();
    let kubeconfig = identity.kubeconfig_via(via.path(), &proxy.url());
    let mut first = daemon(&env, &dir, &identity, Some(&kubeconfig));
    let applied = eventually(Duration::from_secs(60), || {
        labelled(&env) == desired(&env, None, 100, 100)
    });
    assert!(
        applied.is_some(),
        "revision 1 never applied:\n{}",
        first.log()
    );

    // Revision 2 drops the Secrets and adds 500 ConfigMaps; the daemon dies once it
    // has applied the first of them, before its prune.
    proxy.set_latency(Duration::from_millis(50));
    let from = first.log().len();
    dir.write("all.yaml", &manifests(&env, None, 600, 0));
    let striking = first.wait_for_log(
        from,
        &["applied", "object=ConfigMap/", "action=created"],
        Duration::from_secs(60),
    );
    assert!(
        striking,
        "the daemon never applied revision 2:\n{}",
        first.log()
    );
    first.kill();
    let killed_log = first.log();
    drop(first);
    assert_every_member_kind_recorded(&env, "the daemon killed mid-apply");
    let members = labelled(&env);
    let new = members
        .iter()
        .filter(|m| m.starts_with("ConfigMap ") && !desired(&env, None, 100, 0).contains(*m))
        .count();
    let secrets = members.iter().filter(|m| m.starts_with("Secret ")).count();
    println!(
        "the daemon was killed with {new} of 500 new ConfigMaps written, {secrets} Secrets left"
    );
    assert!(
        new > 0 && new < 500 && secrets == 100,
        "not killed mid-apply: {new} of 500 new ConfigMaps written, {secrets} of 100 Secrets \
         left to prune:\n{killed_log}"
    );
    let written_before = identity.events(&env.ns).len();

    // Restarted (directly, no latency): it finishes revision 2, prune included.
    let second = daemon(&env, &dir, &identity, None);
    let want = desired(&env, None, 600, 0);
    let finished = eventually(Duration::from_secs(120), || labelled(&env) == want);
    assert!(
        finished.is_some(),
        "the restarted daemon never finished revision 2:\n{}",
        second.log()
    );
    let synced = eventually(Duration::from_secs(60), || {
        second.source()["result"] == "synced"
    });
    assert!(synced.is_some(), "{:#}", second.source());
    assert_converged(&env, &dir, &want);

    // The audit log: across both daemons every object was created at most once, and
    // after the kill nothing the new revision dropped was written but its deletion.
    let events = identity.events(&env.ns);
    let twice: Vec<_> = creations(&events)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "created more than once: {twice:?}");
    let after_kill = &events[written_before..];
    let revived: Vec<String> = after_kill
        .iter()
        .filter(|e| e.is_write() && e.resource == "secrets" && e.verb != "delete")
        .map(|e| format!("{} {} {}", e.verb, e.object(), e.code))
        .collect();
    assert!(
        revived.is_empty(),
        "the restarted daemon wrote Secrets that revision 2 dropped: {revived:?}"
    );
    // What existed at the kill is updated, never created again. (The kill's own
    // requests in flight may land yet are logged 504: the client went away.)
    let existing: BTreeSet<String> = members
        .iter()
        .filter_map(|m| {
            let (kind, object) = m.split_once(' ')?;
            let name = object.rsplit('/').next()?;
            Some(format!("{}s/{name}", kind.to_ascii_lowercase()))
        })
        .collect();
    let recreated: Vec<String> = after_kill
        .iter()
        .filter(|e| e.is_write() && e.code == 201 && existing.contains(&e.object()))
        .map(AuditEvent::object)
        .collect();
    assert!(
        recreated.is_empty(),
        "the restarted daemon created again what existed: {recreated:?}"
    );
    let pruned = after_kill
        .iter()
        .filter(|e| e.verb == "delete" && e.resource == "secrets" && e.succeeded())
        .count();
    assert_eq!(pruned, 100, "each dropped Secret is deleted once");
    let deleted_configmaps: Vec<String> = events
        .iter()
        .filter(|e| e.verb == "delete" && e.resource == "configmaps")
        .map(AuditEvent::object)
        .collect();
    assert!(
        deleted_configmaps.is_empty(),
        "ConfigMaps were deleted: {deleted_configmaps:?}"
    );
}
