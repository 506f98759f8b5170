use std::collections::HashMap;
use std::sync::Arc;

use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::{Context, Input, ProcessError, Processor, Record};
use pavilion_schemas::{
    AcceptedRequest, CodecError, Event, PolicyDocument, PolicyOutcome, PolicyRef, PolicyState,
    Registry,
};
use serde::{Deserialize, Serialize};

use crate::document::PolicySpec;
use crate::engine::{CompiledPolicy, Evaluation};

/// What the stage reads: accepted requests, and policy lifecycle events.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyInput {
    /// From `pavilion.requests.accepted`.
    Accepted(AcceptedRequest),
    /// From `pavilion.policies`.
    Document(PolicyDocument),
}

impl Input for PolicyInput {
    fn decode(registry: &Registry, _topic: &str, bytes: &[u8]) -> Result<Self, CodecError> {
        match registry.name_of(bytes)? {
            AcceptedRequest::FULL_NAME => registry.decode(bytes).map(PolicyInput::Accepted),
            PolicyDocument::FULL_NAME => registry.decode(bytes).map(PolicyInput::Document),
            other => Err(CodecError::SchemaMismatch {
                expected: format!(
                    "{} or {}",
                    AcceptedRequest::FULL_NAME,
                    PolicyDocument::FULL_NAME
                ),
                found: other.to_owned(),
            }),
        }
    }
}

/// Which policy version a tenant had active from when. `version` 0: none (retired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// From, ms.
    pub at_ms: i64,
    /// Policy id.
    pub policy_id: String,
    /// Version.
    pub version: i64,
}

/// Owner segment of store keys for shared templates.
const TEMPLATES: &str = "*";

fn document_key(owner: &str, policy_id: &str, version: i64) -> Vec<u8> {
    format!("{owner}\0{policy_id}\0{version:020}").into_bytes()
}

/// The policy processor. Compiled policies are cached by store key (owner, policy, version):
/// versions are immutable (a different body under a known version is refused), so a cache hit
/// skips reading and parsing the document. The cache is rebuilt lazily after a restart.
#[derive(Default)]
pub struct PolicyStage {
    compiled: HashMap<Vec<u8>, Arc<CompiledPolicy>>,
}

impl Processor for PolicyStage {
    type Input = PolicyInput;

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<PolicyInput>,
    ) -> Result<(), ProcessError> {
        match record.value {
            PolicyInput::Document(document) => self.record_document(ctx, document),
            PolicyInput::Accepted(accepted) => {
                // Rules see the time the request was accepted, not the clock: a replay of the
                // log re-derives the same decision.
                let (policy, evaluation) = match self.active_policy(ctx, &accepted)? {
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
                ctx.count(
                    &format!(
                        "outcome.{}",
                        serde_json::to_value(evaluation.effect)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    ),
                    &accepted.request.tenant_id,
                );
                let outcome = PolicyOutcome {
                    request: accepted.request.clone(),
                    policy,
                    effect: evaluation.effect,
                    denying_rules: evaluation.denying_rules,
                    plan: evaluation.plan,
                    response_format: evaluation.response_format,
                    response_template: evaluation.response_template,
                    evaluated_at: epoch_millis(ctx.now()),
                };
                ctx.emit("outcomes", accepted.request.tenant_id.clone(), &outcome)
            }
        }
    }
}

impl PolicyStage {
    /// Stores a version (any state) and, for tenant policies, moves the activation history.
    fn record_document(
        &mut self,
        ctx: &mut Context<'_>,
        document: PolicyDocument,
    ) -> Result<(), ProcessError> {
        PolicySpec::from_body(&document.body, &document.content_hash).map_err(|e| {
            ProcessError::new(format!(
                "policy {} v{}: {e}",
                document.policy_id, document.version
            ))
        })?;
        let owner = document
            .tenant_id
            .clone()
            .unwrap_or_else(|| TEMPLATES.to_owned());
        let key = document_key(&owner, &document.policy_id, document.version);
        let mut documents = ctx.store("documents")?;
        if let Some(known) = documents.get::<PolicyDocument>(&key)? {
            if known.content_hash != document.content_hash {
                return Err(ProcessError::new(format!(
                    "policy {} v{} already exists with other content; versions are immutable",
                    document.policy_id, document.version
                )));
            }
        }
        documents.put(&key, &document)?;
        let Some(tenant) = document.tenant_id.clone() else {
            return Ok(());
        };
        let mut active = ctx.store("active")?;
        let mut history: Vec<Activation> = active.get(tenant.as_bytes())?.unwrap_or_default();
        let current = history.last().cloned();
        // The event's own time, not the clock: replaying the log yields the same history.
        let at_ms = document.created_at;
        match document.state {
            PolicyState::Active => history.push(Activation {
                at_ms,
                policy_id: document.policy_id.clone(),
                version: document.version,
            }),
            PolicyState::Retired
                if current.as_ref().is_some_and(|c| {
                    c.policy_id == document.policy_id && c.version == document.version
                }) =>
            {
                history.push(Activation {
                    at_ms,
                    policy_id: String::new(),
                    version: 0,
                })
            }
            _ => return Ok(()),
        }
        active.put(tenant.as_bytes(), &history)?;
        ctx.count("policy.activated", &tenant);
        Ok(())
    }

    /// The compiled policy active for the request's tenant when it was accepted, or the rule
    /// that denies everything instead.
    fn active_policy(
        &mut self,
        ctx: &mut Context<'_>,
        accepted: &AcceptedRequest,
    ) -> Result<Result<Arc<CompiledPolicy>, String>, ProcessError> {
        let tenant = &accepted.request.tenant_id;
        let history: Vec<Activation> = ctx
            .store("active")?
            .get(tenant.as_bytes())?
            .unwrap_or_default();
        let Some(activation) = history
            .iter()
            .rev()
            .find(|a| a.at_ms <= accepted.accepted_at)
        else {
            return Ok(Err("no-active-policy".to_owned()));
        };
        if activation.version == 0 {
            return Ok(Err("no-active-policy".to_owned()));
        }
        let key = document_key(tenant, &activation.policy_id, activation.version);
        if let Some(compiled) = self.compiled.get(&key) {
            return Ok(Ok(compiled.clone()));
        }
        let documents = ctx.store("documents")?;
        let Some(document) = documents.get::<PolicyDocument>(&document_key(
            tenant,
            &activation.policy_id,
            activation.version,
        ))?
        else {
            return Ok(Err(format!(
                "policy-missing:{}@{}",
                activation.policy_id, activation.version
            )));
        };
        let mut spec = PolicySpec::from_body(&document.body, &document.content_hash)
            .map_err(ProcessError::new)?;
        if let Some(template) = &document.template {
            let Some(t) = documents.get::<PolicyDocument>(&document_key(
                TEMPLATES,
                &template.policy_id,
                template.version,
            ))?
            else {
                return Ok(Err(format!(
                    "template-missing:{}@{}",
                    template.policy_id, template.version
                )));
            };
            if t.content_hash != template.content_hash {
                return Ok(Err(format!(
                    "template-changed:{}@{}",
                    template.policy_id, template.version
                )));
            }
            spec = spec
                .over(&PolicySpec::from_body(&t.body, &t.content_hash).map_err(ProcessError::new)?);
        }
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
