//! The API server restarts under a running daemon: watches resume, nothing crashes,
//! nothing is written twice, and drift is still detected afterwards.
//!
//! The test takes the control plane exclusively ([`PlaneAccess::Exclusive`]), so the
//! restart cannot disturb other tests running in the same process.

use crate::common::daemon::{Daemon, time_until};
use crate::common::{PlaneAccess, TestEnv, repo_root};
use std::process::Command;
use std::time::Duration;

#[test]
fn watches_resume_after_an_apiserver_restart() {
    let env = TestEnv::with_access("apiserver-restart", PlaneAccess::Exclusive);
    let ns = env.ns.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    for name in ["a", "b"] {
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{value: desired}}\n"
        );
        std::fs::write(dir.path().join(format!("{name}.yaml")), manifest).expect("write");
    }
    let config = format!(
        "state_dir = \"{}\"\n\n[[source]]\nname = \"{{ns}}\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\ninterval = \"1h\"\n",
        state.path().display(),
        dir.path().display()
    );
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

    let restart = Command::new("bash")
        .arg(repo_root().join("hack/controlplane.sh"))
        .arg("restart-apiserver")
        .output()
        .expect("run hack/controlplane.sh restart-apiserver");
    crate::common::assert_success("hack/controlplane.sh restart-apiserver", &restart);
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

    env.kubectl(&[
        "patch",
        "configmap",
        "a",
        "-n",
        &ns,
        "-p",
        r#"{"data":{"value":"edited"}}"#,
    ]);
    let value = || {
        env.kubectl(&[
            "get",
            "configmap",
            "a",
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.value}",
        ])
    };
    let healed = time_until(Duration::from_secs(20), || value() == "desired");
    let healed = healed
        .unwrap_or_else(|| panic!("drift after the restart was not healed:\n{}", daemon.log()));
    println!("drift after an apiserver restart was healed after {healed:?}");
    assert_eq!(
        daemon.metric("converge_apply_actions_total"),
        writes + 1.0,
        "exactly one write: the heal"
    );
}
