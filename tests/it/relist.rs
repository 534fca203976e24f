//! The safety net under the watch cache (issue #28): a watch event that never
//! arrives leaves the daemon's cache wrong, and only the periodic relist
//! (`relist_every`) finds it. The event proxy drops one MODIFIED event of a
//! ConfigMap the daemon owns while a person edits it; kubectl shows the edit
//! standing until the next relist, then healed, and the metric counts one repair.

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::event_proxy::EventProxy;
use crate::common::{Manifests, TestEnv, configmap, eventually};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Short enough for a test, long enough to sample the drift many times first.
const RELIST_EVERY: Duration = Duration::from_secs(20);

/// Where the daemon says it repaired its cache.
const REPAIRED: &str = "the watch cache missed a change";

#[test]
fn a_dropped_watch_event_is_healed_at_the_next_relist_and_not_before() {
    let env = TestEnv::new("relist-dropped");
    let manifests = Manifests::with("target.yaml", &configmap("target", "desired"));
    let proxy = EventProxy::start(&env);
    let scratch = tempfile::tempdir().expect("tempdir");
    let kubeconfig = env.kubeconfig_via(scratch.path(), &proxy.url());
    let kubeconfig = kubeconfig.display().to_string();
    // An hour between resyncs: only the relist can find what the watch missed.
    let config = format!(
        "{}relist_every = \"{}s\"\n",
        dir_config(manifests.path(), "1h", Drift::Heal),
        RELIST_EVERY.as_secs()
    );
    let daemon = Daemon::start_with_env(&env, &config, &[], &[("KUBECONFIG", &kubeconfig)]);
    let applied = env.wait_configmap_value("target", "desired", Duration::from_secs(60));
    assert!(applied.is_some(), "never applied:\n{}", daemon.log());

    // The first relist finds the cache right, at the cost of one LIST page (one
    // kind, one object) and nothing else; the next is a whole period away.
    let observed = eventually(Duration::from_secs(30), || {
        let objects = daemon.source()["health"]["objects"].clone();
        let observed = |o: &Value| o["message"] != "not observed yet";
        objects
            .as_array()
            .is_some_and(|all| all.iter().all(observed))
            .then_some(())
    });
    assert!(
        observed.is_some(),
        "the watch never saw the object: {}",
        daemon.source()
    );
    let reads =
        |verb: &str| daemon.metric(&format!("converge_api_requests_total{{verb=\"{verb}\"}}"));
    let (lists, gets, before) = (reads("list"), reads("get"), daemon.log().len());
    let quiet = daemon.wait_for_log(before, &["relisted", "repairs=0"], RELIST_EVERY * 3);
    assert!(quiet, "no relist that found nothing:\n{}", daemon.log());
    assert_eq!(
        (reads("list") - lists, reads("get") - gets),
        (1.0, 0.0),
        "a relist that finds nothing costs one LIST page here (LISTs, GETs sent)"
    );
    assert!(
        proxy.watches() > 0,
        "the watches do not go through the proxy"
    );
    let from = daemon.log().len();
    proxy.swallow_next_modified("target");
    let edited = Instant::now();
    env.edit_configmap_value("target", "drifted");

    // Until the relist, the daemon does not know: the edit stands.
    let mut samples = 0;
    while !daemon.log()[from..].contains(REPAIRED) {
        assert!(
            edited.elapsed() < RELIST_EVERY * 3,
            "no repair within three relist periods (swallowed: {}):\n{}",
            proxy.swallowed(),
            daemon.log()
        );
        let value = env.configmap_value("target");
        if daemon.log()[from..].contains(REPAIRED) {
            break;
        }
        assert_eq!(
            value.as_deref(),
            Some("drifted"),
            "healed before the relist found the missed event:\n{}",
            daemon.log()
        );
        samples += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    let found_after = edited.elapsed();
    assert_eq!(proxy.swallowed(), 1, "the proxy dropped no event");
    assert!(
        samples >= 5 && found_after >= RELIST_EVERY / 2,
        "the drift was seen only {samples} times, and repaired {found_after:?} after the \
         edit: too soon for the relist"
    );

    // At the relist: repaired, reconciled, counted.
    let healed = env.wait_configmap_value("target", "desired", Duration::from_secs(30));
    assert!(
        healed.is_some(),
        "not healed after the repair:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    let repair = log[from..]
        .lines()
        .find(|l| l.contains(REPAIRED))
        .unwrap_or_default();
    let object = format!("ConfigMap/{}/target", env.ns);
    assert!(
        repair.contains(&object) && repair.contains("changed: resourceVersion"),
        "the repair does not say which object and what differed: {repair}"
    );
    let repairs = format!(
        "converge_cache_repairs_total{{source=\"{}\",kind=\"ConfigMap\"}}",
        env.ns
    );
    assert_eq!(
        daemon.metric("converge_cache_repairs_total"),
        1.0,
        "{}",
        daemon.metrics()
    );
    assert_eq!(daemon.metric(&repairs), 1.0, "{}", daemon.metrics());
    assert!(
        daemon.metric("converge_relist_seconds_count") >= 2.0,
        "{}",
        daemon.metrics()
    );
    eprintln!(
        "{repair}\ndrift seen {samples} times before the relist; repaired {found_after:?} after the edit, \
         healed {:?} later",
        healed.unwrap_or_default()
    );
}
