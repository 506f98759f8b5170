//! `pavilion request`: what a relying party's back end does, from the command line, through
//! the client library: normalize, get OPRF tokens from the providers, sign, produce, and
//! optionally wait for the answer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use pavilion_client::{
    sign_request, OprfClient, ProviderEndpoint, RegionRoutes, RequestDraft, Residency,
    TenantCredentials,
};
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_provider::normalize::{oprf_input, IdentifierKind};
use pavilion_schemas::{
    ClaimRequest, Decision, Event, MatchResult, MatchStatus, Payload, Provider, Registry,
    RequestRejected, SubjectToken, VerificationRequest, PRESENTATION_PARAM,
};

use crate::cli::{self, parse_duration, ClusterArgs, TopologyFile};
use crate::commands::control::read_latest;

#[derive(Args)]
pub struct RequestArgs {
    /// The tenant's request-signing key file (`pavilion tenant add-key --generate`).
    #[arg(long)]
    pub key: PathBuf,
    /// Tenant id; must match the key file's (default: the key file's).
    #[arg(long)]
    pub tenant: Option<String>,
    /// The subject's identifier. Normalized, then only its OPRF tokens leave this process.
    /// Without it the request carries no token: only claims answered by a holder's
    /// credential (--presentation) can be verified.
    #[arg(long, required_unless_present = "presentations")]
    pub subject: Option<String>,
    /// Kind of identifier: email, phone (E.164) or id.
    #[arg(long, default_value = "email", value_parser = ["email", "phone", "id"])]
    pub id_kind: String,
    /// Claims to verify, comma-separated, e.g. account_verified,fraud_listed. A claim takes
    /// parameters as name:key=value (e.g. age_over:threshold=18).
    #[arg(long, value_delimiter = ',', required = true)]
    pub claims: Vec<String>,
    /// Purpose code the request is made for (policy evaluates it), e.g. kyc.
    #[arg(long)]
    pub purpose: String,
    /// Subject's jurisdiction, ISO 3166 (e.g. DE, US-CA).
    #[arg(long)]
    pub jurisdiction: String,
    /// Reference to the subject's consent record, when the purpose requires consent.
    #[arg(long)]
    pub consent: Option<String>,
    /// Ask only these providers (repeatable); default: every active provider answering one
    /// of the claims.
    #[arg(long = "provider")]
    pub providers: Vec<String>,
    /// Send the subject's blinded identifier only to provider endpoints in these regions
    /// (repeatable or comma-separated, e.g. eu,uk): the tenant's allowed regions or the
    /// subject's. An endpoint's region is the part of its zone before the first `-` (eu-b
    /// is in eu); endpoints elsewhere are never called, and a provider with none here sends
    /// no token. Default: every region.
    #[arg(long = "region", value_name = "REGION", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Idempotency key (default: random).
    #[arg(long)]
    pub request_id: Option<String>,
    /// The request's nonce (default: random). A holder binds its credential presentation to
    /// it (`pavilion holder present --nonce`), so pick it first and give it to the holder.
    #[arg(long)]
    pub nonce: Option<String>,
    /// A holder's credential presentation for a claim whose policy takes `credential`
    /// evidence, as CLAIM=FILE (repeatable); it travels as the claim's `presentation`
    /// parameter.
    #[arg(long = "presentation", value_name = "CLAIM=FILE")]
    pub presentations: Vec<String>,
    #[command(flatten)]
    pub http: cli::HttpClientArgs,
    /// Wait for the answer and print it: the signed decision from the tenant's decision
    /// topic (the match result in a topology without a signing stage).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// With --wait, print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// The regions' clusters (`scripts/infra regions up` writes one, and `regions env`
    /// points $PAVILION_CLUSTERS at it): lines `REGION.bootstrap=HOST:PORT` and
    /// `REGION.kafka_config=FILE`. With it the request goes to the region of the topology's
    /// `regions:` that serves --jurisdiction, whatever --bootstrap says, and tokens come only
    /// from provider endpoints in that region unless --region says otherwise.
    #[arg(long, env = "PAVILION_CLUSTERS", value_name = "FILE")]
    pub clusters: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// How long a routed request waits for its region's cluster to answer at all.
const REGION_PROBE: Duration = Duration::from_secs(3);

/// The cluster a request for a subject of `jurisdiction` goes to: with `--clusters`, the
/// region serving it; with `--in-region`, that region if it serves it. Refused here rather
/// than by the region's tenancy, so nothing of the request reaches a region that may not
/// hold it.
fn route(a: &RequestArgs) -> Result<(ClusterArgs, Option<String>)> {
    let topology = cli::load(&TopologyFile {
        region: None,
        ..a.cluster.file.clone()
    })?;
    if topology.regions.regions.is_empty() {
        return Ok((a.cluster.clone(), None));
    }
    let mut routes = RegionRoutes::default();
    let clusters = a.clusters.as_deref().map(cli::read_clusters).transpose()?;
    for region in topology.regions.regions.values() {
        let target = match &clusters {
            Some(c) => c.get(&region.name).cloned(),
            None => (a.cluster.file.region.as_deref() == Some(region.name.as_str()))
                .then(|| (a.cluster.bootstrap.clone(), a.cluster.kafka_config.clone())),
        };
        routes.add(&region.name, region.jurisdictions.clone(), target);
    }
    let (region, target) = routes.route(&a.jurisdiction)?;
    let Some((bootstrap, kafka_config)) = target.clone() else {
        match (&a.cluster.file.region, &a.clusters) {
            (Some(here), _) if *here != region => bail!(
                "--in-region {here}, but subjects of {} are served by region {region}: the request is not sent",
                a.jurisdiction
            ),
            (_, Some(file)) => bail!("{} has no cluster for region {region}, which serves {}", file.display(), a.jurisdiction),
            // A topology with regions, used as one cluster: nothing to route.
            _ => return Ok((a.cluster.clone(), None)),
        }
    };
    let mut cluster = a.cluster.clone();
    cluster.bootstrap = bootstrap;
    cluster.kafka_config = kafka_config;
    cluster.file.region = Some(region.to_owned());
    Ok((cluster, Some(region.to_owned())))
}

fn claim(text: &str) -> Result<ClaimRequest> {
    let (name, params) = text.split_once(':').unwrap_or((text, ""));
    let mut map = BTreeMap::new();
    for pair in params.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("claim parameter `{pair}` is not key=value"))?;
        map.insert(k.to_owned(), v.to_owned());
    }
    Ok(ClaimRequest {
        name: name.to_owned(),
        params: map,
    })
}

pub fn run(a: RequestArgs) -> Result<ExitCode> {
    let key_json = std::fs::read_to_string(&a.key)
        .with_context(|| format!("reading the key file {}", a.key.display()))?;
    let credentials = TenantCredentials::from_key_file(&key_json)?;
    if let Some(t) = &a.tenant {
        if *t != credentials.tenant_id {
            bail!(
                "--tenant {t} but {} is a key of tenant `{}`",
                a.key.display(),
                credentials.tenant_id
            );
        }
    }
    let kind = IdentifierKind::parse(&a.id_kind).expect("clap checked the kind");
    let input = a
        .subject
        .as_deref()
        .map(|s| oprf_input(kind, s).context("--subject"))
        .transpose()?;
    let mut claims = a
        .claims
        .iter()
        .map(|c| claim(c))
        .collect::<Result<Vec<_>>>()?;
    for p in &a.presentations {
        let (name, file) = p
            .split_once('=')
            .with_context(|| format!("--presentation `{p}` is not CLAIM=FILE"))?;
        let claim = claims
            .iter_mut()
            .find(|c| c.name == name)
            .with_context(|| format!("--presentation for `{name}`, which --claims does not ask"))?;
        let presentation = std::fs::read_to_string(file)
            .with_context(|| format!("reading the presentation {file}"))?;
        claim
            .params
            .insert(PRESENTATION_PARAM.into(), presentation.trim().to_owned());
    }

    let (cluster, region) = route(&a)?;
    let topology = cli::load(&cluster.file)?;
    let settings = cli::settings(&cluster, "cli")?;
    if let Some(region) = &region {
        eprintln!(
            "subject of {}: region {region} ({})",
            a.jurisdiction, cluster.bootstrap
        );
        // The one region that may take the request: down, it fails now and says so.
        pavilion_kafka::reachable(&settings, REGION_PROBE).with_context(|| {
            format!(
                "region {region} ({}), the only one serving {}, is unreachable: the request is not sent",
                cluster.bootstrap, a.jurisdiction
            )
        })?;
    }
    // First, so that its start-up (an idempotent producer asks for its id on a 500 ms timer
    // when no broker is up yet) overlaps reading the registry and getting the tokens.
    let producer = PlainProducer::new(&settings)?;
    let registry_topic = cli::topic_for(&topology, Provider::FULL_NAME)?.name;
    // This region's registry and the other regions' copies of it, as psi sees them.
    let providers = read_latest(
        &cluster,
        &topology,
        &registry_topic,
        |p: &Provider| p.provider_id.clone(),
        Provider::order,
    )?;
    let eligible: Vec<ProviderEndpoint> = providers
        .values()
        .filter(|p| a.providers.is_empty() || a.providers.contains(&p.provider_id))
        .filter_map(|p| {
            claims
                .iter()
                .find_map(|c| ProviderEndpoint::for_claim(p, &c.name))
        })
        .collect();
    if eligible.is_empty() && input.is_some() {
        eprintln!(
            "warning: no active provider answers {:?}; the request goes without tokens",
            a.claims
        );
    }
    // Each provider's endpoints, healthy first; a failed or timed-out attempt moves on to
    // the next one in an allowed region.
    let client = OprfClient::with_tls(credentials.clone(), &a.http.tls()?)?;
    // Routed to a region: the subject's identifier goes only to endpoints there, unless
    // --region names others.
    let residency = match (&region, a.regions.is_empty()) {
        (Some(region), true) => Residency::regions([region.as_str()]),
        _ => Residency::regions(a.regions.iter().map(|r| r.trim())),
    };
    let mut tokens = Vec::new();
    for provider in eligible.iter().filter(|_| input.is_some()) {
        let input = input.as_ref().expect("filtered");
        match client.tokens_in(provider, &residency, std::slice::from_ref(input)) {
            Ok(outputs) => tokens.push(SubjectToken {
                provider_id: provider.provider_id.clone(),
                token: outputs[0].to_vec(),
            }),
            // The request still goes: policy and matching will say this provider could not
            // answer (`unavailable`), which is the truth.
            Err(e) => eprintln!("warning: no token from {}: {e}", provider.provider_id),
        }
    }
    let request = sign_request(
        &credentials,
        RequestDraft {
            claims,
            purpose: a.purpose.clone(),
            subject_jurisdiction: a.jurisdiction.clone(),
            consent_ref: a.consent.clone(),
            response_format: None,
            request_id: a.request_id.clone(),
            nonce: a.nonce.clone(),
        },
        tokens,
    );
    // The answer is the signed decision on the tenant's own topic; a topology without a
    // signing stage answers with the match result (or the rejection).
    let answers = if a.wait {
        let decisions = cli::topic_for(&topology, Decision::FULL_NAME)
            .ok()
            .and_then(|family| topology.family_topic(&family.name, &request.tenant_id));
        let topics = match decisions {
            Some(t) => {
                ensure_decision_topic(&settings, &t, region.as_deref())?;
                vec![t.name]
            }
            None => vec![
                cli::topic_for(&topology, MatchResult::FULL_NAME)?.name,
                cli::topic_for(&topology, RequestRejected::FULL_NAME)?.name,
            ],
        };
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        Some(TopicReader::at_end(&settings, &topics)?)
    } else {
        None
    };
    let ingest = cli::topic_for(&topology, VerificationRequest::FULL_NAME)?.name;
    producer.send(
        &ingest,
        request.tenant_id.as_bytes(),
        &Registry::builtin().encode(&request)?,
    )?;
    producer.flush()?;
    let with: Vec<&str> = request
        .subject_tokens
        .iter()
        .map(|t| t.provider_id.as_str())
        .collect();
    eprintln!(
        "sent request {} (tenant {}) to {ingest} with tokens from [{}]",
        request.request_id,
        request.tenant_id,
        with.join(", ")
    );
    let Some(reader) = answers else {
        println!("{}", request.request_id);
        return Ok(ExitCode::SUCCESS);
    };
    let answer = wait(&reader, &request.request_id, a.timeout, a.json);
    if a.request_id.is_some() {
        // A retry (the same question under its id) gets the original decision again; another
        // question under an answered id is a conflict, which gets no answer at all.
        return answer.context(
            "was this --request-id answered before for a different request? That is a conflict and gets no answer: the id keeps its first",
        );
    }
    answer
}

/// The tenant's decision topic, made if missing: activation makes it in the tenant's home
/// region, and the pipeline elsewhere at its first decision, which --wait must not miss.
fn ensure_decision_topic(
    settings: &pavilion_kafka::KafkaSettings,
    topic: &pavilion_runtime::topology::TopicSpec,
    region: Option<&str>,
) -> Result<()> {
    if pavilion_kafka::topics_with_prefix(settings, &topic.name)?.contains(&topic.name) {
        return Ok(());
    }
    tokio::runtime::Runtime::new()?
        .block_on(pavilion_kafka::ensure_topics(settings, &[topic]))
        .with_context(|| {
            format!(
                "the decision topic {} does not exist{} yet, and this principal may not create it: send without --wait, or have the operator run `pavilion tenant activate` there",
                topic.name,
                region.map(|r| format!(" in region {r}")).unwrap_or_default()
            )
        })?;
    Ok(())
}

fn print_decision(d: &Decision, json: bool) -> Result<ExitCode> {
    let token = match &d.payload {
        Payload::Text(t) => t.clone(),
        Payload::Binary(b) => hex::encode(b),
    };
    if json {
        let outcomes: Vec<serde_json::Value> = d
            .outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "claim": o.claim_name,
                    "outcome": serde_json::to_value(o.outcome).unwrap_or_default(),
                    "reason": o.reason,
                })
            })
            .collect();
        let rejection = d.rejection.as_ref().map(|r| {
            serde_json::json!({ "reason": serde_json::to_value(r.reason).unwrap_or_default(), "detail": r.detail })
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "request_id": d.request_id,
                "format": serde_json::to_value(d.format).unwrap_or_default(),
                "signing_key_id": d.signing_key_id,
                "outcomes": outcomes,
                "rejection": rejection,
                "token": token,
            }))?
        );
    } else {
        if let Some(r) = &d.rejection {
            println!("rejected: {:?}: {}", r.reason, r.detail);
            return Ok(ExitCode::from(1));
        }
        for o in &d.outcomes {
            let outcome = serde_json::to_value(o.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let reason = o
                .reason
                .as_ref()
                .map_or(String::new(), |r| format!(" ({r})"));
            println!("{}: {outcome}{reason}", o.claim_name);
        }
        println!(
            "signed decision ({:?}, key {}):\n{token}",
            d.format, d.signing_key_id
        );
    }
    Ok(if d.rejection.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn wait(reader: &TopicReader, request_id: &str, timeout: Duration, json: bool) -> Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    let registry = Registry::builtin();
    while Instant::now() < deadline {
        let Some(record) = reader.poll(Duration::from_millis(200))? else {
            continue;
        };
        let Some(value) = record.value else { continue };
        if let Ok(d) = registry.decode::<Decision>(&value) {
            if d.request_id != request_id {
                continue;
            }
            return print_decision(&d, json);
        }
        if let Ok(m) = registry.decode::<MatchResult>(&value) {
            if m.outcome.request.request_id != request_id {
                continue;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&m.results)?);
            } else {
                for r in &m.results {
                    let status = match r.status {
                        MatchStatus::Matched => "matched",
                        MatchStatus::NotMatched => "not matched",
                        _ => "unavailable",
                    };
                    let reason = r
                        .reason
                        .as_ref()
                        .map_or(String::new(), |r| format!(" ({r})"));
                    println!("{}: {status}{reason}", r.claim_name);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        if let Ok(r) = registry.decode::<RequestRejected>(&value) {
            if r.request_id == request_id {
                println!("rejected: {:?}: {}", r.reason, r.detail);
                return Ok(ExitCode::from(1));
            }
        }
    }
    bail!("no answer to request {request_id} within {timeout:?}: is `pavilion run` running?")
}
