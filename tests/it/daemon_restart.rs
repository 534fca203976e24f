//! The API server restarts under a running daemon: watches resume, nothing crashes,
//! nothing is written twice, and drift is still detected afterwards.
//!
//! The test takes the control plane exclusively ([`PlaneAccess::Exclusive`]), so the
//! restart cannot disturb other tests running in the same process.

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, PlaneAccess, TestEnv, configmap, restart_apiserver};
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
    let daemon = Daemon::start(&env, &config, &[]);
    daemon.wait_ready(Duration::from_secs(30));
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
    std::thread::sleep(Duration::from_secs(2));

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
