//! The relying party's client library: everything an RP back end (or `pavilion request`)
//! does before a request reaches the broker.
//!
//! 1. [`normalize`](pavilion_provider::normalize) the subject identifier;
//! 2. [`OprfClient::tokens`]: blind it, ask each provider's evaluation service (signed with
//!    the tenant's request-signing key), verify the provider's batch proof against the public
//!    key the provider registered, finalize: `F_k(x)`, the only thing the broker will see;
//! 3. [`sign_request`]: build the `VerificationRequest` with those tokens and sign it.
//!
//! Kafka is left to the caller (any producer that writes the encoded record to the ingest
//! topic keyed by tenant id will do).
//!
//! A provider may serve evaluations at several endpoints, in zones of one or more regions
//! ([`ProviderEndpoint`], read from its registry record). An [`OprfClient`] keeps the health
//! of every endpoint it calls: each attempt has a deadline ([`FailoverConfig`]), an endpoint
//! failing repeatedly is put behind the others by its circuit breaker, a failed or slow
//! attempt moves on to (or is raced by, [`FailoverConfig::hedge_after`]) the next endpoint
//! the call's [`Residency`] allows, and [`OprfClient::start_probes`] asks every endpoint in
//! the background so a dead one is skipped, and a recovered one used again, before a
//! request pays for finding out.
#![deny(missing_docs)]

mod endpoints;
mod failover;
mod pool;
mod regions;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use pavilion_provider::oprf::{self, OprfError, Output, MAX_BATCH};
use pavilion_provider::protocol::{auth_message, EvaluateRequest};
use pavilion_schemas::{ClaimRequest, ResponseFormat, SubjectToken, VerificationRequest};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

pub use endpoints::{
    endpoints_of, region_of, registry_endpoints, Endpoint, OprfUrl, ProviderEndpoint, Residency,
    PRIMARY_KEY, ZONE_KEY_PREFIX,
};
pub use pool::{BreakerState, EndpointStats, FailoverConfig, PoolStats};
pub use regions::RegionRoutes;

/// A request-signing key file, as `pavilion tenant add-key --generate` writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Tenant.
    pub tenant_id: String,
    /// Key id.
    pub key_id: String,
    /// 32-byte Ed25519 seed, hex.
    pub secret_key: String,
    /// Public key, hex.
    pub public_key: String,
}

/// A tenant's identity for signing.
#[derive(Clone)]
pub struct TenantCredentials {
    /// Tenant.
    pub tenant_id: String,
    /// Registered key id.
    pub key_id: String,
    /// The key.
    pub signing_key: SigningKey,
}

impl TenantCredentials {
    /// Reads a [`KeyFile`]'s JSON.
    pub fn from_key_file(json: &str) -> Result<Self, ClientError> {
        let file: KeyFile = serde_json::from_str(json)
            .map_err(|e| ClientError::KeyFile(format!("not a Pavilion key file: {e}")))?;
        let seed: [u8; 32] = hex::decode(file.secret_key.trim())
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| ClientError::KeyFile("secret_key must be 64 hex digits".into()))?;
        Ok(TenantCredentials {
            tenant_id: file.tenant_id,
            key_id: file.key_id,
            signing_key: SigningKey::from_bytes(&seed),
        })
    }
}

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The key file is unusable.
    #[error("key file: {0}")]
    KeyFile(String),
    /// The TLS settings are unusable: a CA or client certificate that does not parse.
    #[error("TLS settings: {0}")]
    Tls(String),
    /// The provider refused (4xx/5xx), with its error code. A 4xx is not tried at another
    /// endpoint: it would be refused the same there.
    #[error("provider `{provider}` answered {status} {code}: {message}")]
    Refused {
        /// Provider.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The service's error code (`rate_limited`, `unknown_tenant`, ...).
        code: String,
        /// Its message.
        message: String,
    },
    /// The service could not be reached.
    #[error("provider `{provider}` at {url}: {message}")]
    Transport {
        /// Provider.
        provider: String,
        /// URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The answer is not what the protocol says.
    #[error("provider `{provider}` sent a malformed answer: {message}")]
    Malformed {
        /// Provider.
        provider: String,
        /// What.
        message: String,
    },
    /// Blinding, proof verification or finalization failed; a failed proof means the
    /// provider did not evaluate with its registered key, so its answer is discarded.
    #[error("provider `{provider}`: {source}")]
    Oprf {
        /// Provider.
        provider: String,
        /// Cause.
        #[source]
        source: OprfError,
    },
    /// Every endpoint the call was allowed to use was tried, and each failed. (When the
    /// provider has one allowed endpoint, its own error is returned instead.)
    #[error(
        "provider `{provider}`: no endpoint answered: {}",
        .failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Unavailable {
        /// Provider.
        provider: String,
        /// Each endpoint tried, in the order tried, and why it failed.
        failures: Vec<EndpointFailure>,
    },
    /// None of the provider's endpoints is in a region the call allows; none was called.
    #[error(
        "provider `{provider}` has no OPRF endpoint in {allowed} (its endpoints: {endpoints})"
    )]
    NoAllowedEndpoint {
        /// Provider.
        provider: String,
        /// The regions allowed.
        allowed: String,
        /// The provider's zones and their regions.
        endpoints: String,
    },
    /// No region serves the subject's jurisdiction ([`RegionRoutes::route`]).
    #[error("no region serves subjects of jurisdiction {jurisdiction} ({regions}): the request is not sent")]
    NoRegion {
        /// The subject's jurisdiction.
        jurisdiction: String,
        /// Each region and what it serves.
        regions: String,
    },
}

/// One endpoint's failure within [`ClientError::Unavailable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFailure {
    /// Zone.
    pub zone: String,
    /// Base URL.
    pub url: String,
    /// What happened: a transport error, a timeout, a 5xx, an answer that does not verify.
    pub reason: String,
}

impl std::fmt::Display for EndpointFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (zone {}): {}", self.url, self.zone, self.reason)
    }
}

/// The system's TLS, set up at the first `https` call: loading its CA bundle takes tens of
/// milliseconds, which a service on plain HTTP (loopback, or behind a TLS proxy) never needs.
struct LazyTls(OnceLock<Result<native_tls::TlsConnector, String>>);

impl ureq::TlsConnector for LazyTls {
    fn connect(
        &self,
        dns_name: &str,
        io: Box<dyn ureq::ReadWrite>,
    ) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        match self
            .0
            .get_or_init(|| native_tls::TlsConnector::new().map_err(|e| e.to_string()))
        {
            Ok(tls) => ureq::TlsConnector::connect(tls, dns_name, io),
            Err(e) => Err(std::io::Error::other(format!("setting up TLS: {e}")).into()),
        }
    }
}

/// How a client speaks TLS beyond the system's defaults.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// PEM CA certificates to trust besides the system's (a provider's private CA).
    pub trusted_pem: Option<Vec<u8>>,
    /// A PEM client certificate and its PKCS#8 PEM key, for services that require one.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    fn connector(&self) -> Result<native_tls::TlsConnector, ClientError> {
        let tls_error = |what: &str, e: native_tls::Error| ClientError::Tls(format!("{what}: {e}"));
        let mut builder = native_tls::TlsConnector::builder();
        if let Some(pem) = &self.trusted_pem {
            let certs = native_tls::Certificate::stack_from_pem(pem)
                .map_err(|e| tls_error("the trusted CA certificates", e))?;
            if certs.is_empty() {
                return Err(ClientError::Tls(
                    "the trusted CA file holds no PEM certificate".into(),
                ));
            }
            for cert in certs {
                builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.identity_pem {
            builder.identity(
                native_tls::Identity::from_pkcs8(cert, key)
                    .map_err(|e| tls_error("the client certificate and key", e))?,
            );
        }
        builder.build().map_err(|e| tls_error("setting up TLS", e))
    }
}

/// Talks to providers' evaluation services for one tenant, over every endpoint of each, with
/// the health of every endpoint shared by all its calls (it is `Send + Sync`: share one
/// client between threads rather than making one per call).
pub struct OprfClient {
    transport: failover::Transport,
    credentials: TenantCredentials,
    probing: AtomicBool,
}

/// One client serves every thread of a caller.
const _: fn() = || {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<OprfClient>();
};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl OprfClient {
    /// A client trusting the system's CAs, with the default [`FailoverConfig`].
    pub fn new(credentials: TenantCredentials) -> Self {
        Self::with_agent(
            credentials,
            ureq::AgentBuilder::new().tls_connector(Arc::new(LazyTls(OnceLock::new()))),
            false,
        )
    }

    /// A client with `tls`'s CAs and client certificate as well.
    pub fn with_tls(credentials: TenantCredentials, tls: &ClientTls) -> Result<Self, ClientError> {
        if tls.trusted_pem.is_none() && tls.identity_pem.is_none() {
            return Ok(Self::new(credentials));
        }
        Ok(Self::with_agent(
            credentials,
            ureq::AgentBuilder::new().tls_connector(Arc::new(tls.connector()?)),
            tls.identity_pem.is_some(),
        ))
    }

    fn with_agent(
        credentials: TenantCredentials,
        agent: ureq::AgentBuilder,
        has_identity: bool,
    ) -> Self {
        OprfClient {
            transport: failover::Transport {
                // Every request sets its own deadline (FailoverConfig).
                agent: agent.build(),
                pool: Arc::new(pool::Pool::new(FailoverConfig::default())),
                has_identity,
            },
            credentials,
            probing: AtomicBool::new(false),
        }
    }

    /// The same client with `config`: set it before the first call and before
    /// [`start_probes`](Self::start_probes) (the endpoints' health starts afresh).
    pub fn with_failover(mut self, config: FailoverConfig) -> Self {
        self.transport.pool = Arc::new(pool::Pool::new(config));
        // A probe thread already started follows the old pool, and ends with it.
        self.probing = AtomicBool::new(false);
        self
    }

    /// Probes every endpoint this client has been allowed to call (and those given to
    /// [`track`](Self::track)) each `interval`, on a thread of its own, with `GET
    /// /v1/oprf/key` and [`FailoverConfig::probe_timeout`]: a failed probe counts as a failed
    /// call, and so does a service answering with another key than the provider registered;
    /// a successful one lets an endpoint whose breaker is open have its trial call at once.
    /// The thread ends within an interval after the client is dropped. Only the first call
    /// starts it.
    pub fn start_probes(&self, interval: Duration) -> std::io::Result<()> {
        if self.probing.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let (pool, agent) = (
            Arc::downgrade(&self.transport.pool),
            self.transport.agent.clone(),
        );
        std::thread::Builder::new()
            .name("oprf-probes".into())
            .spawn(move || failover::probe_loop(pool, agent, interval))
            .map(drop)
    }

    /// Makes `provider`'s endpoints that `residency` allows known to the probes before the
    /// first call to them.
    pub fn track(&self, provider: &ProviderEndpoint, residency: &Residency) {
        self.transport
            .pool
            .order(provider, residency, Instant::now());
    }

    /// What the calls so far have done: attempts, fail-overs, hedges, breakers opened,
    /// probes, and every endpoint's health.
    pub fn stats(&self) -> PoolStats {
        self.transport.pool.stats(Instant::now())
    }

    /// `F_k(x)` for each input under `provider`'s key, from any of its endpoints, in batches
    /// of at most 1,000 (one request and one proof each). Inputs are OPRF inputs (see
    /// [`pavilion_provider::normalize::oprf_input`]).
    pub fn tokens(
        &self,
        provider: &ProviderEndpoint,
        inputs: &[Vec<u8>],
    ) -> Result<Vec<Output>, ClientError> {
        self.tokens_in(provider, &Residency::Anywhere, inputs)
    }

    /// [`tokens`](Self::tokens) from the endpoints in `residency`'s regions only; the others
    /// are never called.
    pub fn tokens_in(
        &self,
        provider: &ProviderEndpoint,
        residency: &Residency,
        inputs: &[Vec<u8>],
    ) -> Result<Vec<Output>, ClientError> {
        let mut outputs = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(MAX_BATCH) {
            outputs.extend(self.batch(provider, residency, chunk)?);
        }
        Ok(outputs)
    }

    fn batch(
        &self,
        provider: &ProviderEndpoint,
        residency: &Residency,
        inputs: &[Vec<u8>],
    ) -> Result<Vec<Output>, ClientError> {
        let blinded = inputs
            .iter()
            .map(|i| oprf::blind(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ClientError::Oprf {
                provider: provider.provider_id.clone(),
                source,
            })?;
        let body = serde_json::to_vec(&EvaluateRequest {
            blinded: blinded.iter().map(|b| B64.encode(b.element)).collect(),
        })
        .expect("serializable");
        let c = &self.credentials;
        let timestamp = now_ms();
        let message = auth_message(
            &provider.provider_id,
            &c.tenant_id,
            &c.key_id,
            timestamp,
            &body,
        );
        let signature = B64.encode(c.signing_key.sign(&message).to_bytes());
        let call = failover::Call {
            provider_id: provider.provider_id.clone(),
            public_key: provider.public_key,
            body,
            headers: failover::Call::headers(&c.tenant_id, &c.key_id, timestamp, signature),
            inputs: inputs.to_vec(),
            blinded,
        };
        failover::evaluate(&self.transport, provider, residency, call)
    }
}

/// What the relying party asks, before tokens and signature.
#[derive(Debug, Clone)]
pub struct RequestDraft {
    /// Claims, in the order the decision reports them.
    pub claims: Vec<ClaimRequest>,
    /// Purpose code.
    pub purpose: String,
    /// Subject's jurisdiction (ISO 3166).
    pub subject_jurisdiction: String,
    /// Consent reference, when the purpose needs one.
    pub consent_ref: Option<String>,
    /// Preferred format.
    pub response_format: Option<ResponseFormat>,
    /// Idempotency key; a random one when `None`.
    pub request_id: Option<String>,
    /// The request's nonce; a random one when `None`. A holder binds its credential
    /// presentation to it, so the relying party picks it first and gives it to the holder.
    pub nonce: Option<String>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill(b.as_mut_slice());
    hex::encode(b)
}

/// The signed request carrying only tokens.
pub fn sign_request(
    credentials: &TenantCredentials,
    draft: RequestDraft,
    subject_tokens: Vec<SubjectToken>,
) -> VerificationRequest {
    let now = now_ms();
    let mut request = VerificationRequest {
        request_id: draft.request_id.unwrap_or_else(|| random_hex(16)),
        tenant_id: credentials.tenant_id.clone(),
        key_id: credentials.key_id.clone(),
        signature: Vec::new(),
        signed_at: now,
        nonce: draft.nonce.unwrap_or_else(|| random_hex(16)),
        created_at: now,
        claims: draft.claims,
        purpose: draft.purpose,
        subject_jurisdiction: draft.subject_jurisdiction,
        consent_ref: draft.consent_ref,
        subject_tokens,
        response_format: draft.response_format,
    };
    request.signature = credentials
        .signing_key
        .sign(&request.signing_bytes())
        .to_bytes()
        .to_vec();
    request
}

/// Tokens per chunk of a batch job: 2,000 × 64 bytes keeps each record (and the psi stage's
/// changelog record of it) far below Kafka's default 1 MB message limit.
pub const JOB_CHUNK_TOKENS: usize = 2_000;

/// A batch PSI job ready to send: the signed request (claim `record_link`, committing to
/// the tokens' digest) and the chunks carrying the tokens. The request's id is the job id:
/// send the chunks keyed by it and the request keyed by tenant id (as every request), in any
/// order.
pub fn batch_job(
    credentials: &TenantCredentials,
    provider_id: &str,
    tokens: &[Output],
    reveal_intersection: bool,
    purpose: &str,
    subject_jurisdiction: &str,
) -> (VerificationRequest, Vec<pavilion_schemas::PsiJobChunk>) {
    let job_id = random_hex(16);
    let digest = pavilion_schemas::job_tokens_digest(tokens.iter().map(|t| t.as_slice()));
    let params = [
        ("job", job_id.clone()),
        ("provider", provider_id.to_owned()),
        ("count", tokens.len().to_string()),
        ("tokens_sha256", hex::encode(digest)),
        (
            "reveal",
            if reveal_intersection {
                "intersection"
            } else {
                "cardinality"
            }
            .to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let request = sign_request(
        credentials,
        RequestDraft {
            claims: vec![ClaimRequest {
                name: "record_link".into(),
                params,
            }],
            purpose: purpose.to_owned(),
            subject_jurisdiction: subject_jurisdiction.to_owned(),
            consent_ref: None,
            response_format: None,
            // The job id is the request id: the job's chunks (keyed by job id) and its
            // request (keyed by request id after tenancy) meet on one partition.
            request_id: Some(job_id.clone()),
            nonce: None,
        },
        Vec::new(),
    );
    let parts: Vec<&[Output]> = tokens.chunks(JOB_CHUNK_TOKENS).collect();
    let chunks = parts
        .iter()
        .enumerate()
        .map(|(i, part)| pavilion_schemas::PsiJobChunk {
            job_id: job_id.clone(),
            tenant_id: credentials.tenant_id.clone(),
            chunk: i as i32,
            chunks: parts.len().max(1) as i32,
            tokens: part
                .iter()
                .map(|t| pavilion_schemas::AvroBytes(t.to_vec()))
                .collect(),
            submitted_at: request.created_at,
        })
        .collect();
    (request, chunks)
}
