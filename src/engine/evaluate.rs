//! Evaluating one existing object under a source's drift rules: what converge sends
//! (ignored fields left to their owners), whether managedFields prove it in sync,
//! else what the server's dry-run says, with the kubectl family's edits taken over
//! ([`crate::engine::takeover`]) and immutable fields re-created when allowed
//! ([`crate::engine::recreate`]).

use super::memo::is_newer_base;
use super::writes::Refusal;
use super::writes::send_to;
use super::{DriftRules, FIELD_MANAGER, Memo};
use crate::engine::applyset::PRUNE_ANNOTATION;
use crate::engine::diff::secret_texts;
use crate::engine::fieldset::FieldSet;
use crate::engine::ignore::Ignored;
use crate::engine::managed_fields;
use crate::engine::plan::{Desired, Evaluation};
use crate::engine::recreate;
use crate::engine::takeover::{self, Ownership, Takeover};
use crate::kube::Meta;
use crate::kube::{ApiResource, Client, Error as KubeError, PostParams};
use crate::manifest::{Manifest, Problem};
use serde_json::Value;
use std::sync::Arc;

/// An existing object and its manifest, read against the drift rules.
pub(super) struct Existing<'a> {
    /// What is applied: the manifest with ignored fields left to their owners.
    pub(super) manifest: Manifest,
    /// The manifest as written, when the ignore rules changed it: a re-created
    /// object is created as written.
    written: Option<Manifest>,
    live: Arc<Value>,
    ignored: Ignored,
    ownership: Ownership,
    /// The ignored fields as managedFields paths: never taken over.
    protected: FieldSet,
    rules: &'a DriftRules,
}

/// Where the object lives on the server.
pub(super) struct Location<'a> {
    pub(super) client: &'a Client,
    pub(super) resource: &'a ApiResource,
    pub(super) path: &'a str,
}

impl<'a> Existing<'a> {
    pub(super) fn read(manifest: Manifest, live: Arc<Value>, rules: &'a DriftRules) -> Self {
        let ignored = rules.ignore.for_object(&manifest.object_ref());
        let ownership = Ownership::of(&live, FIELD_MANAGER, &rules.managers);
        let owners = [&ownership.ours, &ownership.theirs, &ownership.others];
        let protected = protected(&ignored, &live, &owners);
        let (manifest, written) = match ignored.is_empty() {
            true => (manifest, None),
            false => {
                let mut applied = manifest.clone();
                // Without managedFields (the daemon's store), who owns a field is
                // unknown: keeping the live value is right either way.
                let ours = has_managed_fields(&live).then_some(&ownership.ours);
                ignored.payload(&mut applied.body, &live, ours);
                (applied, Some(manifest))
            }
        };
        Existing {
            manifest,
            written,
            live,
            ignored,
            ownership,
            protected,
            rules,
        }
    }

    pub(super) fn live(&self) -> &Value {
        &self.live
    }

    /// With what the memo says about it: the manifest and the live object are the
    /// ones a dry-run answered for.
    pub(super) fn remembered(self, memo: &Memo) -> Desired {
        let dry_run = match &memo.dry_run {
            Some(answer) => Evaluation::Server(answer.as_ref().clone()),
            None => Evaluation::InSync,
        };
        self.desired(dry_run, None)
    }

    /// Proven in sync from managedFields, or else what the server's dry-run says.
    pub(super) async fn evaluate(self, at: &Location<'_>) -> Result<Desired, Refusal> {
        let body = &self.manifest.body;
        if managed_fields::apply_is_noop(
            body,
            &self.live,
            FIELD_MANAGER,
            &self.ownership,
            &self.protected,
        ) {
            return Ok(self.desired(Evaluation::InSync, None));
        }
        match send_to(at.client, at.resource, &self.manifest, true).await {
            Ok(answer) => self.answered(answer, at).await,
            Err(error) if error.is_transient() => Err(self.refusal(error)),
            Err(error) => self.refused(error, at).await,
        }
    }

    /// The dry-run's answer, without what a takeover of the kubectl family's edits
    /// would remove (its managedFields show who owns what after the apply), as the
    /// server then validates and defaults it.
    async fn answered(self, answer: Value, at: &Location<'_>) -> Result<Desired, Refusal> {
        let after = Ownership::of(&answer, FIELD_MANAGER, &self.rules.managers);
        let owners = [&after.ours, &after.theirs, &after.others];
        let protected = protected(&self.ignored, &answer, &owners);
        let removed = after.drift_only(&protected);
        let newer = is_newer_base(&answer, Some(&self.live));
        let mut this = self;
        if newer {
            // Our copy predates a change someone else made (a LIST or watch event
            // behind the dry-run): comparing them would show that change as ours.
            if let Some(live) = this.get(at).await? {
                this.live = live;
            }
        }
        if removed.is_empty() {
            return Ok(this.desired(Evaluation::Server(answer), None));
        }
        let mut expected = answer;
        removed.remove_from(&mut expected, &after.kept(&protected));
        let validated = validate(expected, at).await;
        let validated = validated.map_err(|e| this.refusal(e))?;
        let takeover = this.takeover(at).await?;
        Ok(this.desired(Evaluation::Server(validated), takeover))
    }

    /// A dry-run the server refused: an immutable field (re-created if allowed),
    /// or a merge with the kubectl family's edits that only their takeover heals.
    async fn refused(self, error: KubeError, at: &Location<'_>) -> Result<Desired, Refusal> {
        let immutable = recreate::immutable_fields(&error);
        if !immutable.is_empty() {
            return self.recreate(error, &immutable, at).await;
        }
        let mut this = self;
        if !has_managed_fields(&this.live) {
            if let Some(live) = this.get(at).await? {
                this.ownership = Ownership::of(&live, FIELD_MANAGER, &this.rules.managers);
                this.live = live;
            }
        }
        if this.ownership.drift_only(&this.protected).is_empty() {
            return Err(this.refusal(error));
        }
        let expected = takeover::expected_after_takeover(
            &this.live,
            &this.manifest.body,
            &this.ownership,
            &this.protected,
        );
        let Ok(validated) = validate(expected, at).await else {
            return Err(this.refusal(error));
        };
        let takeover = this.takeover(at).await?;
        Ok(this.desired(Evaluation::Server(validated), takeover))
    }

    /// An immutable field changed: when allowed, what a dry-run create of the
    /// manifest (under a generated name) says the new object will be; else the
    /// rejection, naming the field and how to allow re-creating.
    async fn recreate(
        self,
        error: KubeError,
        fields: &[String],
        at: &Location<'_>,
    ) -> Result<Desired, Refusal> {
        let manifest = self.written.as_ref().unwrap_or(&self.manifest);
        if !self.rules.recreate.allows(manifest) {
            let object = manifest.object_ref().to_string();
            return Err(Refusal::Rejected(Problem {
                object: Some(object),
                origin: manifest.origin.clone(),
                message: format!("{error}; {}", recreate::hint(fields)),
            }));
        }
        let probe = recreate::probe_body(manifest);
        let collection = at.resource.path(manifest.namespace(), None);
        let params = PostParams { dry_run: true };
        let answer = match at.client.create(&collection, &probe, &params).await {
            Ok(answer) => recreate::as_named(answer, manifest),
            Err(e) => return Err(self.refusal(e)),
        };
        let manifest = self.written.unwrap_or(self.manifest);
        let live = without_managed_fields(self.live);
        let dry_run = Evaluation::Recreate(answer);
        Ok(Desired::new(manifest, Some(live), dry_run))
    }

    /// The takeover of the kubectl family's fields, from managedFields read fresh
    /// when our copy has none (the daemon's store keeps none).
    async fn takeover(&mut self, at: &Location<'_>) -> Result<Option<Takeover>, Refusal> {
        if !has_managed_fields(&self.live) {
            if let Some(live) = self.get(at).await? {
                self.live = live;
            }
        }
        Ok(Takeover::of(
            &self.live,
            FIELD_MANAGER,
            &self.manifest.api_version,
            &self.rules.managers,
            &self.protected,
        ))
    }

    async fn get(&self, at: &Location<'_>) -> Result<Option<Arc<Value>>, Refusal> {
        match at.client.get_opt(at.path).await {
            Ok(live) => Ok(live.map(Arc::new)),
            Err(error) => Err(self.refusal(error)),
        }
    }

    /// The refusal of this manifest, a Secret's values redacted from the server's
    /// words.
    fn refusal(&self, error: KubeError) -> Refusal {
        let secrets = secret_texts(&Value::Object(self.manifest.body.clone()));
        let error = error.redacted(&secrets);
        Refusal::of(self.manifest.object_ref(), &self.manifest.origin, error)
    }

    fn desired(self, dry_run: Evaluation, takeover: Option<Takeover>) -> Desired {
        Desired {
            manifest: self.manifest,
            live: Some(without_managed_fields(self.live)),
            dry_run,
            ignored: self.ignored,
            takeover,
        }
    }
}

/// What the server makes of `expected`, a whole object computed here (what the
/// takeover and the apply will leave): a dry-run PUT validates it and fills in the
/// defaults for the fields the takeover removes, as the apply will.
async fn validate(mut expected: Value, at: &Location<'_>) -> Result<Value, KubeError> {
    if let Some(Value::Object(metadata)) = expected.get_mut("metadata") {
        // Unpinned: a dry run, against whatever version is current.
        metadata.remove("managedFields");
        metadata.remove("resourceVersion");
    }
    let params = PostParams { dry_run: true };
    at.client.replace(at.path, &expected, &params).await
}

/// The fields a takeover leaves to whoever set them: the ignored ones, and
/// `converge.dev/prune` (set with `kubectl annotate` on purpose, to keep an object
/// that leaves the source).
fn protected(ignored: &Ignored, object: &Value, owners: &[&FieldSet]) -> FieldSet {
    let mut protected = ignored.field_set(object, owners);
    let prune = format!("f:{PRUNE_ANNOTATION}");
    protected.union(&FieldSet::path(&["f:metadata", "f:annotations", &prune]));
    protected
}

fn has_managed_fields(live: &Value) -> bool {
    live.managed_fields().is_some()
}

/// `live` without its managedFields, which nothing reads once the ownership proof
/// is done (diffs ignore them) and which are often half an object's size: a first
/// reconcile holds every desired object's live copy until its plan is made.
pub(super) fn without_managed_fields(mut live: Arc<Value>) -> Arc<Value> {
    if let Some(Value::Object(metadata)) =
        Arc::get_mut(&mut live).and_then(|l| l.get_mut("metadata"))
    {
        metadata.remove("managedFields");
    }
    live
}
