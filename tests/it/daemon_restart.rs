//! The API server restarts under a running daemon: watches resume, nothing crashes,
//! nothing is written twice, and drift is still detected afterwards.
//!
//! The test takes the control plane exclusively ([`PlaneAccess::Exclusive`]), so the
//! restart cannot disturb other tests running in the same process.

use crate::common::audit::Identity;
use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, PlaneAccess, TestEnv, configmap, eventually, restart_apiserver};
use std::time::Duration;

#[test]
fn watches_resume_after_an_apiserver_restart() {
    let env = TestEnv::with_access("apiserver-restart", PlaneAccess::Exclusive);
    let ns = env.ns.clone();
    let manifests = Manifests::new();
    for name in ["a", "b"] {
        manifests.write(&format!("{name}.yaml"), &configmap(name, "desired"));
    }
    let config = dir_config(manifests.path(), "1h", Drift::Heal);
    // An audited identity: the API server's log says when the daemon's watch opens.
    let identity = Identity::new(&env, &format!("restart-{ns}"));
    let kubeconfig = [("KUBECONFIG", identity.kubeconfig_arg())];
    let daemon = Daemon::start_with_env(&env, &config, &[], &kubeconfig);
    daemon.wait_ready(Duration::from_secs(30));
    let watches = || {
        let opened = identity.watches_opened();
        opened.iter().filter(|w| w.resource == "configmaps").count()
    };
    let opened = eventually(Duration::from_secs(30), || {
        let n = watches();
        (n > 0).then_some(n)
    })
    .unwrap_or_else(|| panic!("the daemon never watched ConfigMaps:\n{}", daemon.log()))
    .value;
    let versions = || {
        env.kubectl(&[
            "get",
            "configmaps",
            "a",
            "b",
            "-n",
            &ns,
            "-o",
            "jsonpath={.items[*].metadata.resourceVersion}",
        ])
    };
    let before = versions();
    let writes = daemon.metric("converge_apply_actions_total");

    restart_apiserver();
    // Settled: the daemon's ConfigMap watch is open again on the new API server,
    // which has answered whatever the daemon asked on the way.
    let resumed = eventually(Duration::from_secs(60), || watches() > opened);
    assert!(
        resumed.is_some(),
        "the daemon's ConfigMap watch never reopened after the restart:\n{}",
        daemon.log()
    );

    assert_eq!(
        daemon.get("/healthz").0,
        200,
        "the daemon died:\n{}",
        daemon.log()
    );
    assert_eq!(versions(), before, "the restart caused writes");
    assert_eq!(
        daemon.metric("converge_apply_actions_total"),
        writes,
        "writes after the restart"
    );

    env.edit_configmap_value("a", "edited");
    let healed = env.wait_configmap_value("a", "desired", Duration::from_secs(20));
    let healed = healed
        .unwrap_or_else(|| panic!("drift after the restart was not healed:\n{}", daemon.log()));
    println!("drift after an apiserver restart was healed after {healed:?}");
    assert_eq!(
        daemon.metric("converge_apply_actions_total"),
        writes + 1.0,
        "exactly one write: the heal"
    );
}
