//! One evaluation call over a provider's endpoints: attempts with a deadline each, fail-over
//! to the next endpoint, hedging, and the background probes. Attempts run on threads of
//! their own (ureq is blocking), so a slow one can be raced and a hung one abandoned; each
//! records its own outcome in the [`Pool`], also when the call has already taken another
//! answer.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use pavilion_provider::oprf::{self, Blinded, Output, ELEMENT_LEN};
use pavilion_provider::protocol::{
    parse_evaluate_response, ErrorBody, KeyInfo, EVALUATE_PATH, KEY_ID_HEADER, KEY_PATH,
    SIGNATURE_HEADER, TENANT_HEADER, TIMESTAMP_HEADER,
};

use crate::endpoints::{Endpoint, ProviderEndpoint, Residency};
use crate::pool::{Pool, ProbeTarget, Start};
use crate::{ClientError, EndpointFailure};

/// A signed evaluation request and what finalizing its answer needs: the same for every
/// endpoint (the signature covers provider, tenant, key id, time and body, not the URL, and
/// every endpoint of a provider holds its one key).
pub(crate) struct Call {
    pub provider_id: String,
    pub public_key: [u8; ELEMENT_LEN],
    pub body: Vec<u8>,
    pub headers: [(&'static str, String); 4],
    pub inputs: Vec<Vec<u8>>,
    pub blinded: Vec<Blinded>,
}

impl Call {
    pub fn headers(
        tenant: &str,
        key_id: &str,
        timestamp: i64,
        signature: String,
    ) -> [(&'static str, String); 4] {
        [
            (TENANT_HEADER, tenant.to_owned()),
            (KEY_ID_HEADER, key_id.to_owned()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (SIGNATURE_HEADER, signature),
        ]
    }
}

/// What every attempt shares with the client.
#[derive(Clone)]
pub(crate) struct Transport {
    pub agent: ureq::Agent,
    pub pool: Arc<Pool>,
    /// Whether a client certificate is presented (see [`NO_CLIENT_CERTIFICATE_HINT`]).
    pub has_identity: bool,
}

/// In TLS 1.3 the client finishes its handshake before the server has checked the client's
/// certificate, so a refusal for a missing certificate arrives either as the server's
/// `certificate required` alert or, when the request is already being written, as a broken
/// pipe or a reset — which alone would say nothing useful.
const NO_CLIENT_CERTIFICATE_HINT: &str = " (the server closed the connection after the TLS \
     handshake; a server that requires client certificates does so when none is presented, \
     and this client has none: give --client-cert and --client-key)";

fn io_error_kind(error: &ureq::Error) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

fn dropped_after_handshake(error: &ureq::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        io_error_kind(error),
        Some(BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof)
    )
}

/// Whether another endpoint might answer where this one failed: not after a refusal (4xx:
/// signature, tenant, limits — the same everywhere).
fn worth_another_endpoint(error: &ClientError) -> bool {
    match error {
        ClientError::Refused { status, .. } => *status >= 500,
        ClientError::Transport { .. }
        | ClientError::Malformed { .. }
        | ClientError::Oprf { .. } => true,
        _ => false,
    }
}

/// The reason of one endpoint's failure, without the provider and URL its listing names.
fn reason(error: &ClientError) -> String {
    match error {
        ClientError::Refused {
            status,
            code,
            message,
            ..
        } => format!("{status} {code}: {message}"),
        ClientError::Transport { message, .. } => message.clone(),
        ClientError::Malformed { message, .. } => format!("malformed answer: {message}"),
        ClientError::Oprf { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// One attempt on one endpoint, answer verified and finalized.
fn attempt(
    transport: &Transport,
    call: &Call,
    endpoint: &Endpoint,
    deadline: Duration,
) -> Result<Vec<Output>, ClientError> {
    let provider = || call.provider_id.clone();
    let url = format!("{}{EVALUATE_PATH}", endpoint.url);
    let mut request = transport
        .agent
        .post(&url)
        .timeout(deadline)
        .set("content-type", "application/json");
    for (name, value) in &call.headers {
        request = request.set(name, value);
    }
    let transport_error = |e: ureq::Error| {
        let mut message = match io_error_kind(&e) {
            Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
                format!("no answer within the attempt's deadline of {deadline:?} ({e})")
            }
            _ => e.to_string(),
        };
        if !transport.has_identity && url.starts_with("https://") && dropped_after_handshake(&e) {
            message.push_str(NO_CLIENT_CERTIFICATE_HINT);
        }
        ClientError::Transport {
            provider: provider(),
            url: url.clone(),
            message,
        }
    };
    let response = match request.send_bytes(&call.body) {
        Ok(r) => r,
        Err(ureq::Error::Status(status, r)) => {
            let text = r.into_string().unwrap_or_default();
            let body: ErrorBody = serde_json::from_str(&text).unwrap_or(ErrorBody {
                error: "http_error".into(),
                message: text,
            });
            return Err(ClientError::Refused {
                provider: provider(),
                status,
                code: body.error,
                message: body.message,
            });
        }
        Err(e) => return Err(transport_error(e)),
    };
    let text = response
        .into_string()
        .map_err(|e| transport_error(ureq::Error::from(e)))?;
    let (evaluated, proof) =
        parse_evaluate_response(text.as_bytes()).map_err(|e| ClientError::Malformed {
            provider: provider(),
            message: e.to_string(),
        })?;
    let inputs: Vec<&[u8]> = call.inputs.iter().map(Vec::as_slice).collect();
    oprf::finalize_batch(&inputs, &call.blinded, &evaluated, &proof, &call.public_key).map_err(
        |source| ClientError::Oprf {
            provider: provider(),
            source,
        },
    )
}

type Answer = (usize, Result<Vec<Output>, ClientError>);

fn launch(
    transport: &Transport,
    call: &Arc<Call>,
    endpoint: &Endpoint,
    index: usize,
    why: Start,
    answers: &Sender<Answer>,
) {
    let pool = &transport.pool;
    pool.start(&endpoint.url, why, Instant::now());
    let deadline = pool.config.deadline(call.inputs.len());
    let (transport, call, endpoint, answers) = (
        transport.clone(),
        call.clone(),
        endpoint.clone(),
        answers.clone(),
    );
    let failed_to_start = (
        answers.clone(),
        call.provider_id.clone(),
        endpoint.url.clone(),
    );
    let spawned = std::thread::Builder::new()
        .name("oprf-attempt".into())
        .spawn(move || {
            let result = attempt(&transport, &call, &endpoint, deadline);
            match &result {
                Err(e) if worth_another_endpoint(e) => {
                    transport
                        .pool
                        .failed(&endpoint.url, &reason(e), Instant::now())
                }
                // An answer, or a refusal: the service is up.
                _ => transport.pool.succeeded(&endpoint.url),
            }
            // The call may have taken another answer and gone.
            let _ = answers.send((index, result));
        });
    if let Err(e) = spawned {
        let (answers, provider, url) = failed_to_start;
        let _ = answers.send((
            index,
            Err(ClientError::Transport {
                provider,
                url,
                message: format!("cannot start a thread for the attempt: {e}"),
            }),
        ));
    }
}

/// Evaluates `call` on the first endpoint of `provider` that answers, in the pool's order,
/// within `residency`.
pub(crate) fn evaluate(
    transport: &Transport,
    provider: &ProviderEndpoint,
    residency: &Residency,
    call: Call,
) -> Result<Vec<Output>, ClientError> {
    let pool = &transport.pool;
    let order = pool.order(provider, residency, Instant::now());
    if order.is_empty() {
        let endpoints: Vec<String> = provider
            .endpoints
            .iter()
            .map(|e| format!("{} in region {}", e.zone, e.region))
            .collect();
        return Err(ClientError::NoAllowedEndpoint {
            provider: provider.provider_id.clone(),
            allowed: residency.to_string(),
            endpoints: endpoints.join(", "),
        });
    }
    let call = Arc::new(call);
    let (answers, answered) = mpsc::channel::<Answer>();
    launch(transport, &call, &order[0], 0, Start::First, &answers);
    let (mut next, mut in_flight, mut hedged) = (1, 1, false);
    let mut failures: Vec<(usize, ClientError)> = Vec::new();
    loop {
        let hedge_after = pool
            .config
            .hedge_after
            .filter(|_| !hedged && in_flight == 1 && next < order.len());
        let (index, result) = match hedge_after {
            Some(after) => match answered.recv_timeout(after) {
                Ok(answer) => answer,
                Err(RecvTimeoutError::Timeout) => {
                    launch(transport, &call, &order[next], next, Start::Hedge, &answers);
                    (next, in_flight, hedged) = (next + 1, in_flight + 1, true);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => unreachable!("`answers` is held here"),
            },
            None => answered.recv().expect("`answers` is held here"),
        };
        in_flight -= 1;
        match result {
            Ok(outputs) => return Ok(outputs),
            Err(e) if !worth_another_endpoint(&e) => return Err(e),
            Err(e) => {
                failures.push((index, e));
                if next < order.len() {
                    launch(
                        transport,
                        &call,
                        &order[next],
                        next,
                        Start::Failover,
                        &answers,
                    );
                    (next, in_flight) = (next + 1, in_flight + 1);
                } else if in_flight == 0 {
                    break;
                }
            }
        }
    }
    if failures.len() == 1 {
        return Err(failures.pop().expect("one").1);
    }
    failures.sort_by_key(|(index, _)| *index);
    Err(ClientError::Unavailable {
        provider: provider.provider_id.clone(),
        failures: failures
            .into_iter()
            .map(|(index, e)| EndpointFailure {
                zone: order[index].zone.clone(),
                url: order[index].url.clone(),
                reason: reason(&e),
            })
            .collect(),
    })
}

/// `GET /v1/oprf/key`: the service is up and serves the provider's registered key.
fn probe(agent: &ureq::Agent, target: &ProbeTarget, timeout: Duration) -> Result<(), String> {
    let text = agent
        .get(&format!("{}{KEY_PATH}", target.url))
        .timeout(timeout)
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())?;
    let info: KeyInfo =
        serde_json::from_str(&text).map_err(|e| format!("unreadable key document: {e}"))?;
    if info.provider != target.provider_id {
        return Err(format!(
            "serves provider `{}`, not `{}`",
            info.provider, target.provider_id
        ));
    }
    if B64.decode(&info.public_key).ok().as_deref() != Some(&target.public_key[..]) {
        return Err("serves another OPRF key than the provider registered".into());
    }
    Ok(())
}

/// Probes every endpoint the pool knows each `interval`, in parallel, until the pool is
/// gone (its client dropped).
pub(crate) fn probe_loop(pool: Weak<Pool>, agent: ureq::Agent, interval: Duration) {
    while let Some(pool) = pool.upgrade() {
        let targets = pool.probe_targets();
        let timeout = pool.config.probe_timeout;
        std::thread::scope(|s| {
            for target in &targets {
                let (pool, agent) = (&pool, &agent);
                s.spawn(move || {
                    let outcome = probe(agent, target, timeout);
                    pool.probed(&target.url, outcome, Instant::now());
                });
            }
        });
        drop(pool);
        std::thread::sleep(interval);
    }
}
