//! The safety net under the reflectors: a periodic metadata LIST of a watched kind,
//! compared with the [`Store`] by resourceVersion, that repairs what the watch
//! missed.
//!
//! Why: a reflector trusts its watch. An event the watch never delivered (a proxy
//! or load balancer that dropped it, an API server bug) leaves the store wrong for
//! as long as the object does not change again, and the daemon's full resync
//! re-plans from that store, so the drift would never be healed. Flux re-reads
//! everything each interval; Argo CD relists its cluster cache. A relist here asks
//! for metadata only (`PartialObjectMetadataList`, paged), so one that finds
//! nothing costs only its LIST requests.
//!
//! A LIST and a watch race: an object changed a moment ago may be in the list
//! before its event reaches the store. So a difference is only a *suspect*; the
//! relist waits [`CONFIRM_AFTER`], keeps the suspects whose stored version did not
//! move meanwhile (the watch did not catch up), reads each of them (GET) and
//! repairs the store from that answer. The repair goes out as an ordinary
//! [`Change`], so the daemon takes it as drift and reconciles the object.
//!
//! `compare` and the suspects are pure and unit-tested; [`Relist::kind`] does the
//! requests.

use super::meta::Meta;
use super::watch::{Change, Store};
use super::{ApiResource, Client, Error, ListParams, ObjectRef};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span};

/// How long a suspect difference is given to arrive by the watch before it is
/// read back: events arrive within milliseconds, a watch being resumed within a
/// second or two.
pub(crate) const CONFIRM_AFTER: Duration = Duration::from_secs(3);

/// One object as a metadata LIST shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub object: ObjectRef,
    pub resource_version: String,
}

impl Listed {
    /// An item of a (metadata) list of `resource`; `None` without a name.
    fn of(resource: &ApiResource, item: &Value) -> Option<Listed> {
        Some(Listed {
            object: ObjectRef {
                group: resource.group.clone(),
                kind: resource.kind.clone(),
                namespace: item.namespace().map(str::to_string),
                name: item.name()?.to_string(),
            },
            resource_version: item.resource_version().unwrap_or_default().to_string(),
        })
    }
}

/// How the store differed from a list, for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Difference {
    /// Stored at one resourceVersion, listed at another.
    Changed { cached: Box<str>, listed: String },
    /// Listed, not stored: created behind the store's back.
    Missing { listed: String },
    /// Stored, not listed: deleted behind its back.
    Stale { cached: Box<str> },
}

/// An object the store may have wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suspect {
    pub object: ObjectRef,
    pub difference: Difference,
}

impl Suspect {
    /// The version the store held when compared (`None`: it held nothing).
    fn cached(&self) -> Option<&str> {
        match &self.difference {
            Difference::Changed { cached, .. } | Difference::Stale { cached } => Some(cached),
            Difference::Missing { .. } => None,
        }
    }

    /// Whether the store still holds what it held at the comparison: the watch did
    /// not catch up, so the difference was no event in flight.
    pub(crate) fn still_behind(&self, stored_now: Option<&str>) -> bool {
        self.cached() == stored_now
    }
}

/// The objects whose stored version (`cached`, one kind) differs from a list of
/// that kind, in a stable order. Versions are compared for equality only: they are
/// opaque, and every write gives an object a new one (a re-created object too).
pub(crate) fn compare(cached: &HashMap<ObjectRef, Box<str>>, listed: &[Listed]) -> Vec<Suspect> {
    let mut suspects = Vec::new();
    let mut seen = std::collections::HashSet::with_capacity(listed.len());
    for item in listed {
        seen.insert(&item.object);
        let difference = match cached.get(&item.object) {
            Some(cached) if **cached == *item.resource_version => continue,
            Some(cached) => Difference::Changed {
                cached: cached.clone(),
                listed: item.resource_version.clone(),
            },
            None => Difference::Missing {
                listed: item.resource_version.clone(),
            },
        };
        suspects.push(Suspect {
            object: item.object.clone(),
            difference,
        });
    }
    for (object, cached) in cached {
        if !seen.contains(object) {
            suspects.push(Suspect {
                object: object.clone(),
                difference: Difference::Stale {
                    cached: cached.clone(),
                },
            });
        }
    }
    suspects.sort_by(|a, b| a.object.cmp(&b.object));
    suspects
}

/// What a repair found behind the store's back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// It changed: its resourceVersion moved, and its uid when it was re-created.
    Changed {
        cached_version: String,
        live_version: String,
        recreated: Option<UidChange>,
    },
    /// It was created.
    Created { live_version: String },
    /// It was deleted.
    Deleted { cached_version: String },
}

/// A re-created object's old and new uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UidChange {
    pub cached: String,
    pub live: String,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Changed {
                cached_version,
                live_version,
                recreated: None,
            } => write!(
                f,
                "changed: resourceVersion {cached_version} in the cache, {live_version} live"
            ),
            Found::Changed {
                cached_version,
                live_version,
                recreated: Some(uid),
            } => write!(
                f,
                "re-created: uid {} in the cache, {} live (resourceVersion {cached_version} → \
                 {live_version})",
                uid.cached, uid.live
            ),
            Found::Created { live_version } => write!(
                f,
                "created: not in the cache, live at resourceVersion {live_version}"
            ),
            Found::Deleted { cached_version } => write!(
                f,
                "deleted: in the cache at resourceVersion {cached_version}, gone live"
            ),
        }
    }
}

/// One repair of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repair {
    pub object: ObjectRef,
    pub found: Found,
}

/// What the relist of one kind did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KindRelist {
    /// Objects listed.
    pub listed: usize,
    /// Requests sent: LIST pages and GETs of suspects.
    pub requests: u32,
    pub repairs: Vec<Repair>,
}

/// Where a relist reads and what it repairs.
pub(crate) struct Relist<'a> {
    pub client: &'a Client,
    pub store: &'a Store,
    /// Where a repair is announced, as the reflector announces a change.
    pub changes: &'a mpsc::UnboundedSender<Change>,
    /// [`CONFIRM_AFTER`], shorter in unit tests.
    pub confirm_after: Duration,
}

impl Relist<'_> {
    /// Lists `resource`'s objects matching `selector` (metadata only, paged),
    /// compares them with the store and repairs what the watch missed.
    pub(crate) async fn kind(
        &self,
        resource: &ApiResource,
        selector: &str,
    ) -> Result<KindRelist, Error> {
        let span = info_span!("relist_kind", kind = %resource.kind, group = %resource.group);
        self.kind_inner(resource, selector).instrument(span).await
    }

    async fn kind_inner(
        &self,
        resource: &ApiResource,
        selector: &str,
    ) -> Result<KindRelist, Error> {
        let path = resource.path(None, None);
        let params = ListParams::labels(selector);
        let (list, pages) = self
            .client
            .list_metadata_map(&path, &params, |item| Listed::of(resource, &item))
            .await?;
        let cached = self.store.versions_of_kind(&resource.group, &resource.kind);
        let suspects = compare(&cached, &list.items);
        let mut done = KindRelist {
            listed: list.items.len(),
            requests: pages,
            repairs: Vec::new(),
        };
        drop((list, cached));
        if suspects.is_empty() {
            return Ok(done);
        }
        debug!(
            suspects = suspects.len(),
            "versions differ; giving the watch time to catch up"
        );
        tokio::time::sleep(self.confirm_after).await;
        for suspect in suspects {
            let stored = self.store.version_of(&suspect.object);
            if !suspect.still_behind(stored.as_deref()) {
                continue;
            }
            done.requests += 1;
            if let Some(repair) = self.repair(resource, &suspect.object).await? {
                done.repairs.push(repair);
            }
        }
        Ok(done)
    }

    /// Reads `object` and puts what the server has into the store, unless the
    /// store has it already (the watch caught up after all).
    async fn repair(
        &self,
        resource: &ApiResource,
        object: &ObjectRef,
    ) -> Result<Option<Repair>, Error> {
        let path = resource.path(object.namespace.as_deref(), Some(&object.name));
        let live = self.client.get_opt(&path).await?;
        let stored = self.store.get(object);
        let cached_version = stored
            .as_ref()
            .and_then(|s| s.resource_version())
            .map(str::to_string);
        let found = match (&live, cached_version) {
            (None, None) => return Ok(None),
            (None, Some(cached_version)) => Found::Deleted { cached_version },
            (Some(live), cached) => {
                let live_version = live.resource_version().unwrap_or_default().to_string();
                match cached {
                    Some(cached) if cached == live_version => return Ok(None),
                    None => Found::Created { live_version },
                    Some(cached_version) => Found::Changed {
                        cached_version,
                        live_version,
                        recreated: recreated(stored.as_ref(), live),
                    },
                }
            }
        };
        let change = match live {
            Some(live) => self.store.repair(live),
            None => self.store.repair_removed(object),
        };
        if let Some(change) = change {
            let _ = self.changes.send(change);
        }
        Ok(Some(Repair {
            object: object.clone(),
            found,
        }))
    }
}

/// The uids, when the stored and the live object are not the same object.
fn recreated(stored: Option<&Value>, live: &Value) -> Option<UidChange> {
    let cached = stored?.uid()?;
    let now = live.uid()?;
    (cached != now).then(|| UidChange {
        cached: cached.to_string(),
        live: now.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str) -> ObjectRef {
        ObjectRef {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    fn listed(name: &str, rv: &str) -> Listed {
        Listed {
            object: cm(name),
            resource_version: rv.into(),
        }
    }

    fn cached(entries: &[(&str, &str)]) -> HashMap<ObjectRef, Box<str>> {
        entries
            .iter()
            .map(|(n, rv)| (cm(n), (*rv).into()))
            .collect()
    }

    #[test]
    fn an_identical_list_finds_nothing() {
        let store = cached(&[("a", "1"), ("b", "7")]);
        assert!(compare(&store, &[listed("b", "7"), listed("a", "1")]).is_empty());
    }

    #[test]
    fn changed_created_and_deleted_objects_are_suspects_in_order() {
        let store = cached(&[("changed", "1"), ("deleted", "2"), ("same", "3")]);
        let list = [
            listed("same", "3"),
            listed("new", "9"),
            listed("changed", "8"),
        ];
        let suspects = compare(&store, &list);
        let expected = vec![
            Suspect {
                object: cm("changed"),
                difference: Difference::Changed {
                    cached: "1".into(),
                    listed: "8".into(),
                },
            },
            Suspect {
                object: cm("deleted"),
                difference: Difference::Stale { cached: "2".into() },
            },
            Suspect {
                object: cm("new"),
                difference: Difference::Missing { listed: "9".into() },
            },
        ];
        assert_eq!(suspects, expected);
    }

    #[test]
    fn a_suspect_the_watch_caught_up_with_is_dropped() {
        let store = cached(&[("a", "1"), ("gone", "2")]);
        let suspects = compare(&store, &[listed("a", "5"), listed("new", "6")]);
        let [changed, gone, new] = &suspects[..] else {
            panic!("{suspects:?}")
        };
        assert!(changed.still_behind(Some("1")), "the store did not move");
        assert!(!changed.still_behind(Some("5")), "the event arrived");
        assert!(
            !changed.still_behind(Some("6")),
            "a later event arrived: the store is past the list"
        );
        assert!(
            !changed.still_behind(None),
            "deleted by the watch meanwhile"
        );
        assert!(gone.still_behind(Some("2")));
        assert!(!gone.still_behind(None), "the deletion arrived");
        assert!(new.still_behind(None));
        assert!(!new.still_behind(Some("6")), "the creation arrived");
    }

    #[test]
    fn list_items_are_read_from_metadata_whatever_their_kind() {
        let resource = ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
            namespaced: true,
            verbs: vec![],
        };
        let item = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "42",
                         "uid": "u1"}});
        let listed = Listed::of(&resource, &item).expect("named");
        assert_eq!(listed.object.to_string(), "Deployment.apps/shop/web");
        assert_eq!(listed.resource_version, "42");
        assert!(Listed::of(&resource, &json!({"metadata": {}})).is_none());
    }

    #[test]
    fn repairs_say_what_differed() {
        let changed = Found::Changed {
            cached_version: "1".into(),
            live_version: "9".into(),
            recreated: None,
        };
        assert_eq!(
            changed.to_string(),
            "changed: resourceVersion 1 in the cache, 9 live"
        );
        let stored = json!({"metadata": {"uid": "old"}});
        let live = json!({"metadata": {"uid": "new"}});
        let uid = recreated(Some(&stored), &live).expect("a new uid");
        assert_eq!((uid.cached.as_str(), uid.live.as_str()), ("old", "new"));
        assert!(recreated(Some(&live), &live).is_none());
        let deleted = Found::Deleted {
            cached_version: "3".into(),
        };
        assert!(deleted.to_string().starts_with("deleted:"));
    }
}
