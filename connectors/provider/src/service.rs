//! `pavilion provider serve-oprf`: the provider's HTTP evaluation service (see
//! [`crate::protocol`] for the contract).
//!
//! Every request is authenticated by a tenant's registered request-signing key (the tenant
//! registry is fed in by the caller, from `pavilion.tenants`), then charged against that
//! tenant's rate limit and daily quota *in evaluations*, before any evaluation happens. The
//! limit is the defence against enumeration: low-entropy identifiers (phone numbers, ids)
//! could otherwise be tried one by one through the oblivious protocol.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use pavilion_schemas::{Tenant, TenantState};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::oprf::{OprfError, ProviderKey, ELEMENT_LEN, MAX_BATCH, SUITE};
use crate::protocol::{
    auth_message, parse_evaluate_request, BodyError, ErrorBody, EvaluateResponse, KeyInfo,
    EVALUATE_PATH, KEY_ID_HEADER, KEY_PATH, SIGNATURE_HEADER, STATUS_LIST_PATH, TENANT_HEADER,
    TIMESTAMP_HEADER,
};

/// Limits of the service.
#[derive(Debug, Clone)]
pub struct ServiceLimits {
    /// Elements per request.
    pub max_batch: usize,
    /// Sustained evaluations per second per tenant.
    pub rate_per_second: NonZeroU32,
    /// Evaluations a tenant may make at once (at least `max_batch`).
    pub burst: NonZeroU32,
    /// Evaluations per tenant per UTC day.
    pub daily_quota: Option<u64>,
    /// How far a request's timestamp may be from the service's clock.
    pub clock_skew: Duration,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            max_batch: MAX_BATCH,
            rate_per_second: NonZeroU32::new(100).expect("non-zero"),
            burst: NonZeroU32::new(MAX_BATCH as u32).expect("non-zero"),
            daily_quota: Some(100_000),
            clock_skew: Duration::from_secs(300),
        }
    }
}

/// The tenants the service knows, kept current by the caller.
#[derive(Default)]
pub struct TenantDirectory(RwLock<HashMap<String, Tenant>>);

impl TenantDirectory {
    /// Records a tenant's latest revision.
    pub fn update(&self, tenant: Tenant) {
        let mut tenants = self.0.write().unwrap_or_else(|p| p.into_inner());
        // From this region's registry or another region's copy, in any order: the greatest
        // version, as the broker's tenancy applies it.
        let newer = tenants
            .get(&tenant.tenant_id)
            .is_none_or(|t| t.order() <= tenant.order());
        if newer {
            tenants.insert(tenant.tenant_id.clone(), tenant);
        }
    }

    fn key(&self, tenant: &str, key_id: &str, at_ms: i64) -> Result<VerifyingKey, Refusal> {
        let tenants = self.0.read().unwrap_or_else(|p| p.into_inner());
        let t = tenants.get(tenant).ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unknown_tenant",
                format!("tenant `{tenant}` is not registered"),
            )
        })?;
        if t.state != TenantState::Active {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "tenant_not_active",
                format!("tenant `{tenant}` is {:?}, not active", t.state),
            ));
        }
        let unknown = || {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unknown_key",
                format!("tenant `{tenant}` has no key `{key_id}` valid at {at_ms}"),
            )
        };
        let k = t
            .signing_keys
            .iter()
            .find(|k| k.key_id == key_id)
            .filter(|k| {
                k.not_before <= at_ms
                    && k.not_after.is_none_or(|end| at_ms < end)
                    && k.revoked_at.is_none_or(|r| at_ms < r)
            })
            .ok_or_else(unknown)?;
        <[u8; 32]>::try_from(k.public_key.as_slice())
            .ok()
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .ok_or_else(unknown)
    }
}

/// The service's metrics, on its own Prometheus registry.
pub struct ServiceMetrics {
    registry: Registry,
    evaluations: IntCounterVec,
    refusals: IntCounterVec,
    batch_seconds: HistogramVec,
}

impl ServiceMetrics {
    fn new() -> Self {
        let registry = Registry::new();
        let evaluations = IntCounterVec::new(
            Opts::new(
                "pavilion_oprf_evaluations_total",
                "Blinded elements evaluated, by tenant.",
            ),
            &["tenant"],
        )
        .expect("metric");
        let refusals = IntCounterVec::new(
            Opts::new(
                "pavilion_oprf_refusals_total",
                "Requests refused, by reason (rate_limited and quota_exceeded are the enumeration defence).",
            ),
            &["reason"],
        )
        .expect("metric");
        let batch_seconds = HistogramVec::new(
            HistogramOpts::new(
                "pavilion_oprf_batch_seconds",
                "Time to evaluate one batch and prove it.",
            ),
            &[],
        )
        .expect("metric");
        crate::metrics::register(
            &registry,
            [
                Box::new(evaluations.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(refusals.clone()),
                Box::new(batch_seconds.clone()),
            ],
        );
        ServiceMetrics {
            registry,
            evaluations,
            refusals,
            batch_seconds,
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        crate::metrics::render(&self.registry)
    }
}

/// Everything a request handler needs.
pub struct OprfService {
    provider_id: String,
    key: ProviderKey,
    tenants: Arc<TenantDirectory>,
    limits: ServiceLimits,
    limiter: DefaultKeyedRateLimiter<String>,
    used_today: Mutex<HashMap<String, (u64, u64)>>,
    /// The file of the provider's signed status list, served as it is at each request (a
    /// cron job signs it anew within every TTL).
    status_list: Option<std::path::PathBuf>,
    /// Metrics.
    pub metrics: ServiceMetrics,
}

/// A 4xx answer.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.code.to_owned(),
                message: self.message,
            }),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
        }
        response
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, Refusal> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "missing_authentication",
                format!("header `{name}` is required (see the OPRF API: tenant, key id, timestamp and Ed25519 signature)"),
            )
        })
}

impl OprfService {
    /// A service for one provider key.
    pub fn new(
        provider_id: &str,
        key: ProviderKey,
        tenants: Arc<TenantDirectory>,
        limits: ServiceLimits,
    ) -> Result<Self, String> {
        if (limits.burst.get() as usize) < limits.max_batch {
            return Err(format!(
                "burst ({}) must be at least the largest batch ({})",
                limits.burst, limits.max_batch
            ));
        }
        let quota = Quota::per_second(limits.rate_per_second).allow_burst(limits.burst);
        Ok(OprfService {
            provider_id: provider_id.to_owned(),
            key,
            tenants,
            limiter: RateLimiter::keyed(quota),
            limits,
            used_today: Mutex::new(HashMap::new()),
            status_list: None,
            metrics: ServiceMetrics::new(),
        })
    }

    /// Serves the status list in `path` at [`STATUS_LIST_PATH`].
    pub fn with_status_list(mut self, path: std::path::PathBuf) -> Self {
        self.status_list = Some(path);
        self
    }

    /// The HTTP routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(KEY_PATH, get(key_info))
            .route(STATUS_LIST_PATH, get(status_list))
            .route(EVALUATE_PATH, post(evaluate))
            .route("/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(
                self.limits.max_batch * (ELEMENT_LEN * 2 + 8) + 1024,
            ))
            .with_state(self)
    }

    fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, Refusal> {
        let tenant = header(headers, TENANT_HEADER)?;
        let key_id = header(headers, KEY_ID_HEADER)?;
        let timestamp: i64 = header(headers, TIMESTAMP_HEADER)?.parse().map_err(|_| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "bad_timestamp",
                "timestamp must be milliseconds since the Unix epoch",
            )
        })?;
        let skew = (now_ms() - timestamp).unsigned_abs();
        if skew > self.limits.clock_skew.as_millis() as u64 {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "stale_timestamp",
                format!(
                    "timestamp is {skew} ms from the service's clock (at most {} ms)",
                    self.limits.clock_skew.as_millis()
                ),
            ));
        }
        let key = self.tenants.key(tenant, key_id, timestamp)?;
        let signature = B64
            .decode(header(headers, SIGNATURE_HEADER)?)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok());
        let message = auth_message(&self.provider_id, tenant, key_id, timestamp, body);
        match signature {
            Some(s) if key.verify_strict(&message, &s).is_ok() => Ok(tenant.to_owned()),
            _ => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "the signature does not verify under the tenant's key for this provider and body",
            )),
        }
    }

    fn charge(&self, tenant: &str, n: usize) -> Result<(), Refusal> {
        let cost = NonZeroU32::new(n as u32).expect("batch is not empty");
        match self.limiter.check_key_n(&tenant.to_owned(), cost) {
            Ok(Ok(())) => {}
            Ok(Err(not_until)) => {
                let mut refusal = Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "tenant `{tenant}` may evaluate {} elements per second (burst {})",
                        self.limits.rate_per_second, self.limits.burst
                    ),
                );
                refusal.retry_after = Some(not_until.wait_time_from(DefaultClock::default().now()));
                return Err(refusal);
            }
            Err(_) => unreachable!("batches are at most the burst, checked at construction"),
        }
        let Some(quota) = self.limits.daily_quota else {
            return Ok(());
        };
        let day = (now_ms() / 86_400_000) as u64;
        let mut used = self.used_today.lock().unwrap_or_else(|p| p.into_inner());
        let entry = used.entry(tenant.to_owned()).or_insert((day, 0));
        if entry.0 != day {
            *entry = (day, 0);
        }
        if entry.1 + n as u64 > quota {
            let mut refusal = Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "tenant `{tenant}` has used {} of its {quota} evaluations today (UTC)",
                    entry.1
                ),
            );
            let next_day_ms = (day + 1) as i64 * 86_400_000;
            refusal.retry_after =
                Some(Duration::from_millis((next_day_ms - now_ms()).max(0) as u64));
            return Err(refusal);
        }
        entry.1 += n as u64;
        Ok(())
    }

    fn handle(&self, headers: &HeaderMap, body: &[u8]) -> Result<EvaluateResponse, Refusal> {
        let tenant = self.authenticate(headers, body)?;
        let blinded = parse_evaluate_request(body, self.limits.max_batch)?;
        let n = blinded.len();
        self.charge(&tenant, n)?;
        let started = Instant::now();
        let (evaluated, proof) = self.key.evaluate_batch(&blinded).map_err(|e| match e {
            OprfError::BadElement { index } => malformed_element(index),
            other => Refusal::new(StatusCode::BAD_REQUEST, "bad_batch", other.to_string()),
        })?;
        self.metrics
            .batch_seconds
            .with_label_values(&[] as &[&str])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .evaluations
            .with_label_values(&[tenant.as_str()])
            .inc_by(n as u64);
        Ok(EvaluateResponse {
            evaluated: evaluated.iter().map(|e| B64.encode(e)).collect(),
            proof: B64.encode(proof),
        })
    }
}

fn malformed_element(index: usize) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "malformed_element",
        format!("element {index} is not base64 of a valid 32-byte ristretto255 point"),
    )
}

impl From<BodyError> for Refusal {
    fn from(e: BodyError) -> Self {
        let (status, code) = match e {
            BodyError::Element { index } => return malformed_element(index),
            BodyError::EmptyBatch => (StatusCode::BAD_REQUEST, "empty_batch"),
            BodyError::BatchTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
            BodyError::Json { .. } | BodyError::Proof => {
                (StatusCode::BAD_REQUEST, "malformed_request")
            }
        };
        Refusal::new(status, code, e.to_string())
    }
}

async fn key_info(State(service): State<Arc<OprfService>>) -> Json<KeyInfo> {
    Json(KeyInfo {
        provider: service.provider_id.clone(),
        suite: SUITE.to_owned(),
        mode: "voprf".to_owned(),
        public_key: B64.encode(service.key.public_key()),
    })
}

async fn status_list(State(service): State<Arc<OprfService>>) -> Response {
    let Some(path) = &service.status_list else {
        return Refusal::new(
            StatusCode::NOT_FOUND,
            "no_status_list",
            "this service publishes no status list (serve-oprf --status-list FILE)",
        )
        .into_response();
    };
    let path = path.clone();
    match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(Ok(list)) => ([("content-type", "application/vc+jwt")], list).into_response(),
        _ => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "status_list_unreadable",
            "the status list cannot be read now",
        )
        .into_response(),
    }
}

async fn evaluate(
    State(service): State<Arc<OprfService>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let worker = service.clone();
    // Evaluation is CPU work: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || worker.handle(&headers, &body)).await;
    match result {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(refusal)) => {
            service
                .metrics
                .refusals
                .with_label_values(&[refusal.code])
                .inc();
            refusal.into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn metrics(State(service): State<Arc<OprfService>>) -> String {
    service.metrics.render()
}
