//! Configuration reload against a real control plane: a source added to
//! config.toml starts while the running one keeps its watches (the API server's
//! audit log sees no new LIST or WATCH of its objects); an invalid change is
//! refused with the key named (on the file change and on SIGHUP) and the running
//! configuration stays; a removed source stops.

use crate::common::audit::Identity;
use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, TestEnv, configmap, eventually};
use std::time::Duration;

/// A second source, `extra`, holding only a ServiceAccount (so that none of its
/// requests is about ConfigMaps, which the first source's are).
fn with_extra(config: &str, extra: &Manifests, table: &str) -> String {
    format!(
        "{config}\n[[source]]\nname = \"extra\"\ndir = \"{dir}\"\nnamespace = \"{{ns}}\"\n{table}",
        dir = extra.path().display()
    )
}

fn service_account(name: &str) -> String {
    format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}}}\n")
}

#[test]
fn an_added_source_starts_and_the_others_keep_their_watches() {
    let env = TestEnv::new("reload");
    let manifests = Manifests::with("a.yaml", &configmap("a", "1"));
    let extra = Manifests::with("sa.yaml", &service_account("robot"));
    let identity = Identity::new(&env, &format!("reload-{}", env.ns));
    let config = dir_config(manifests.path(), "1h", Drift::Heal);
    let vars = [("KUBECONFIG", identity.kubeconfig_arg())];
    let daemon = Daemon::start_with_env(&env, &config, &[], &vars);
    daemon.wait_ready(Duration::from_secs(30));
    let configmap_reads = || {
        let lists = identity
            .events(&env.ns)
            .into_iter()
            .chain(identity.events(""))
            .filter(|e| e.verb == "list" && e.resource == "configmaps")
            .count();
        let watches = (identity.watches_opened().iter())
            .filter(|w| w.resource == "configmaps")
            .count();
        (lists, watches)
    };
    let opened = eventually(Duration::from_secs(30), || {
        let reads = configmap_reads();
        (reads.1 > 0).then_some(reads)
    })
    .unwrap_or_else(|| panic!("no ConfigMap watch opened:\n{}", daemon.log()))
    .value;

    daemon.rewrite_config(&env, &with_extra(&config, &extra, ""));
    let started = eventually(Duration::from_secs(20), || {
        env.kubectl_output(&["get", "serviceaccount", "robot", "-n", &env.ns], None)
            .status
            .success()
    });
    assert!(
        started.is_some(),
        "the added source never applied:\n{}",
        daemon.log()
    );
    let names = eventually(Duration::from_secs(20), || {
        let status = daemon.status();
        let sources = status["sources"].as_array().cloned().unwrap_or_default();
        (sources.len() == 2 && sources.iter().all(|s| s["result"] == "synced")).then_some(())
    });
    assert!(names.is_some(), "{}", daemon.status());
    assert_eq!(
        configmap_reads(),
        opened,
        "the first source listed or watched again"
    );
    let log = daemon.log();
    assert!(log.contains("added=1 changed=0 unchanged=1"), "{log}");

    // An invalid change: refused with its key, the running configuration kept.
    let from = daemon.log().len();
    daemon.rewrite_config(&env, &with_extra(&config, &extra, "interval = \"soon\"\n"));
    let refused = ["the new configuration is refused", "interval"];
    assert!(
        daemon.wait_for_log(from, &refused, Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    let from = daemon.log().len();
    daemon.signal("HUP");
    assert!(
        daemon.wait_for_log(from, &refused, Duration::from_secs(10)),
        "SIGHUP reloads too:\n{}",
        daemon.log()
    );
    manifests.write("a.yaml", &configmap("a", "2"));
    assert!(
        env.wait_configmap_value("a", "2", Duration::from_secs(10))
            .is_some(),
        "the running configuration stopped:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.status()["sources"].as_array().map(Vec::len), Some(2));

    // Changed: only that source restarts.
    let from = daemon.log().len();
    daemon.rewrite_config(&env, &with_extra(&config, &extra, "interval = \"2h\"\n"));
    let restarted = ["configuration reloaded", "added=0 changed=1 unchanged=1"];
    assert!(
        daemon.wait_for_log(from, &restarted, Duration::from_secs(10)),
        "{}",
        daemon.log()
    );

    // Removed: its status goes, the first source still runs on its watches.
    daemon.rewrite_config(&env, &config);
    let removed = eventually(Duration::from_secs(10), || {
        daemon.status()["sources"].as_array().map(Vec::len) == Some(1)
    });
    assert!(removed.is_some(), "{}", daemon.status());
    assert_eq!(
        configmap_reads().1,
        opened.1,
        "the first source's watch reopened"
    );
}
