use std::collections::HashMap;
use std::sync::Arc;

use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::{Context, GlobalStore, ProcessError, Processor, Record};
use pavilion_schemas::{
    AcceptedRequest, Event, PolicyDocument, PolicyOutcome, PolicyRef, Registry,
};

use crate::document::PolicySpec;
use crate::engine::{CompiledPolicy, Evaluation};

/// Owner segment of document keys for shared templates.
const TEMPLATES: &str = "*";

/// Key of a document in the `documents` global store: owner (tenant, or `*` for a
/// template), policy id and version. `\0` cannot occur in ids that pass validation.
fn document_key(owner: &str, policy_id: &str, version: i64) -> Vec<u8> {
    format!("{owner}\0{policy_id}\0{version:020}").into_bytes()
}

/// Where a `pavilion.policies` record goes in the `documents` global store. The topic is
/// keyed by tenant (tenancy reads it on the tenant's partition to know the active
/// revision); this stage, keyed by request id, looks documents up by revision.
pub fn document_store_key(value: &[u8]) -> Result<Vec<u8>, String> {
    let document: PolicyDocument = Registry::builtin()
        .decode(value)
        .map_err(|e| format!("not a {}: {e}", PolicyDocument::FULL_NAME))?;
    let owner = document.tenant_id.as_deref().unwrap_or(TEMPLATES);
    Ok(document_key(owner, &document.policy_id, document.version))
}

/// The policy processor. It evaluates each accepted request under the revision tenancy
/// stamped on it (the one active when the request was accepted), found by revision in the
/// `documents` global store. Compiled policies are cached by revision: revisions are
/// immutable, so a cache hit skips reading and parsing the document.
#[derive(Default)]
pub struct PolicyStage {
    compiled: HashMap<Vec<u8>, Arc<CompiledPolicy>>,
}

impl Processor for PolicyStage {
    type Input = AcceptedRequest;

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<AcceptedRequest>,
    ) -> Result<(), ProcessError> {
        let accepted = record.value;
        // Rules see the time the request was accepted, not the clock: a replay of the log
        // re-derives the same decision.
        let (policy, evaluation) = match self.policy_for(ctx, &accepted)? {
            Err(rule) => (None, Evaluation::deny_all(&accepted.request, &rule)),
            Ok(compiled) => (
                Some(compiled.reference.clone()),
                compiled.evaluate(
                    &accepted.request,
                    &accepted.tenant_allowed_regions,
                    accepted.accepted_at,
                ),
            ),
        };
        // No tenant label: per-tenant volumes are what the analytics stage releases only
        // with differential privacy.
        ctx.count(&format!("outcome.{}", effect_name(&evaluation)), "");
        let outcome = PolicyOutcome {
            request: accepted.request,
            policy,
            effect: evaluation.effect,
            denying_rules: evaluation.denying_rules,
            plan: evaluation.plan,
            response_format: evaluation.response_format,
            response_template: evaluation.response_template,
            evaluated_at: epoch_millis(ctx.now()),
        };
        // Keeps the request id key: outcomes spread over partitions like the requests.
        ctx.emit("outcomes", record.key, &outcome)
    }
}

fn effect_name(evaluation: &Evaluation) -> String {
    serde_json::to_value(evaluation.effect)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl PolicyStage {
    /// The compiled revision the request was accepted under, or the rule that denies
    /// everything instead.
    fn policy_for(
        &mut self,
        ctx: &mut Context<'_>,
        accepted: &AcceptedRequest,
    ) -> Result<Result<Arc<CompiledPolicy>, String>, ProcessError> {
        let Some(revision) = &accepted.policy else {
            return Ok(Err("no-active-policy".to_owned()));
        };
        let tenant = &accepted.request.tenant_id;
        let key = document_key(tenant, &revision.policy_id, revision.version);
        if let Some(compiled) = self
            .compiled
            .get(&key)
            .filter(|c| c.reference.content_hash == revision.content_hash)
        {
            return Ok(Ok(compiled.clone()));
        }
        let documents = ctx.global("documents")?;
        let Some(document) = documents.get::<PolicyDocument>("", &key)? else {
            // Tenancy read this revision from pavilion.policies; this task's copy of the
            // topic has not got there yet.
            return Err(ProcessError::globals_behind(format!(
                "policy {}@{} named by the accepted request is not on pavilion.policies",
                revision.policy_id, revision.version
            )));
        };
        if document.content_hash != revision.content_hash {
            return Ok(Err(format!(
                "policy-changed:{}@{}",
                revision.policy_id, revision.version
            )));
        }
        let spec = match effective_spec(&documents, &document)? {
            Ok(spec) => spec,
            Err(rule) => return Ok(Err(rule)),
        };
        let reference = PolicyRef {
            policy_id: document.policy_id.clone(),
            version: document.version,
            content_hash: document.content_hash.clone(),
        };
        match CompiledPolicy::compile(spec, reference) {
            Ok(compiled) => {
                let compiled = Arc::new(compiled);
                self.compiled.insert(key, compiled.clone());
                Ok(Ok(compiled))
            }
            Err(findings) => Ok(Err(format!(
                "policy-invalid:{}@{}: {}",
                document.policy_id,
                document.version,
                findings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        }
    }
}

/// The document with the template it instantiates applied, or the rule that denies.
fn effective_spec(
    documents: &GlobalStore<'_>,
    document: &PolicyDocument,
) -> Result<Result<PolicySpec, String>, ProcessError> {
    let invalid = |e: String| {
        format!(
            "policy-invalid:{}@{}: {e}",
            document.policy_id, document.version
        )
    };
    let spec = match PolicySpec::from_body(&document.body, &document.content_hash) {
        Ok(spec) => spec,
        Err(e) => return Ok(Err(invalid(e))),
    };
    let Some(template) = &document.template else {
        return Ok(Ok(spec));
    };
    let key = document_key(TEMPLATES, &template.policy_id, template.version);
    let Some(t) = documents.get::<PolicyDocument>("", &key)? else {
        return Err(ProcessError::globals_behind(format!(
            "template {}@{} of policy {}@{} is not on pavilion.policies",
            template.policy_id, template.version, document.policy_id, document.version
        )));
    };
    if t.content_hash != template.content_hash {
        return Ok(Err(format!(
            "template-changed:{}@{}",
            template.policy_id, template.version
        )));
    }
    Ok(PolicySpec::from_body(&t.body, &t.content_hash)
        .map(|base| spec.over(&base))
        .map_err(invalid))
}
