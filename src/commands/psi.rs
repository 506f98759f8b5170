//! `pavilion psi batch`: a relying party's batch PSI job, through the client library.
//! Identifiers never leave this process: they are normalized and turned into OPRF tokens
//! with the provider's service, the tokens go to the broker, and matched positions come
//! back and are mapped to the identifiers here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pavilion_client::{batch_job, OprfClient, ProviderEndpoint, Residency, TenantCredentials};
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_provider::normalize::{oprf_input, IdentifierKind};
use pavilion_provider::oprf::MAX_BATCH;
use pavilion_schemas::{
    Event, Provider, PsiDisclosure, PsiJobChunk, PsiJobResult, PsiJobStatus, Registry,
    VerificationRequest,
};

use crate::cli::{self, parse_duration, ClusterArgs};

#[derive(Subcommand)]
pub enum PsiCommand {
    /// Intersect a file of identifiers with one provider's set; get the intersection or only
    /// its size, as the tenant's policy allows (`disclose: [intersection]` for record_link).
    Batch(BatchArgs),
}

#[derive(Args)]
pub struct BatchArgs {
    /// One identifier per line (blank lines are skipped).
    pub file: PathBuf,
    /// The tenant's request-signing key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Provider whose set to intersect with.
    #[arg(long)]
    pub provider: String,
    /// Kind of identifier: email, phone (E.164) or id.
    #[arg(long, default_value = "email", value_parser = ["email", "phone", "id"])]
    pub id_kind: String,
    /// Send the blinded identifiers only to the provider's endpoints in these regions
    /// (repeatable or comma-separated; as `pavilion request --region`). Default: every
    /// region.
    #[arg(long = "region", value_name = "REGION", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Ask for the intersection itself, or only its size.
    #[arg(long, default_value = "intersection", value_parser = ["intersection", "cardinality"])]
    pub reveal: String,
    /// Purpose code (policy evaluates it).
    #[arg(long)]
    pub purpose: String,
    /// Jurisdiction of the subjects, ISO 3166.
    #[arg(long)]
    pub jurisdiction: String,
    /// Lines that are not valid identifiers tolerated (they are left out of the job).
    #[arg(long, default_value_t = 0)]
    pub max_invalid: usize,
    /// Wait for the result and print it.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// With --wait, write the matched identifiers here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub http: cli::HttpClientArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(command: PsiCommand) -> Result<ExitCode> {
    match command {
        PsiCommand::Batch(a) => batch(a),
    }
}

fn batch(a: BatchArgs) -> Result<ExitCode> {
    let credentials = TenantCredentials::from_key_file(
        &std::fs::read_to_string(&a.key)
            .with_context(|| format!("reading the key file {}", a.key.display()))?,
    )?;
    let kind = IdentifierKind::parse(&a.id_kind).expect("clap checked the kind");
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let mut identifiers = Vec::new();
    let mut inputs = Vec::new();
    let mut invalid = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match oprf_input(kind, line) {
            Ok(input) => {
                identifiers.push(line.trim().to_owned());
                inputs.push(input);
            }
            Err(e) => {
                invalid += 1;
                if invalid <= 10 {
                    eprintln!("  line {}: {e}", n + 1);
                }
            }
        }
    }
    if invalid > a.max_invalid {
        bail!(
            "{invalid} invalid line(s) (at most {} allowed with --max-invalid); nothing was sent",
            a.max_invalid
        );
    }
    if inputs.is_empty() {
        bail!("{} holds no identifiers", a.file.display());
    }

    let topology = cli::load(&a.cluster.file)?;
    let registry_topic = cli::topic_for(&topology, Provider::FULL_NAME)?.name;
    let endpoint = cli::read_all::<Provider>(&a.cluster, &registry_topic)?
        .into_iter()
        .map(|(_, p)| p)
        .rfind(|p| p.provider_id == a.provider)
        .with_context(|| format!("provider `{}` is not registered", a.provider))
        .and_then(|p| {
            ProviderEndpoint::of(&p)
                .with_context(|| format!("provider `{}` has no OPRF endpoint", a.provider))
        })?;

    // One client for every batch: an endpoint found failing is skipped by the next batches.
    let client = OprfClient::with_tls(credentials.clone(), &a.http.tls()?)?;
    let residency = Residency::regions(a.regions.iter().map(|r| r.trim()));
    let bar = ProgressBar::new(inputs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("    tokens [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut tokens = Vec::with_capacity(inputs.len());
    for part in inputs.chunks(MAX_BATCH) {
        tokens.extend(client.tokens_in(&endpoint, &residency, part)?);
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();

    let (request, chunks) = batch_job(
        &credentials,
        &a.provider,
        &tokens,
        a.reveal == "intersection",
        &a.purpose,
        &a.jurisdiction,
    );
    let job_id = request.claims[0].params["job"].clone();
    let settings = cli::settings(&a.cluster, "cli")?;
    let results_topic = cli::topic_for(&topology, PsiJobResult::FULL_NAME)?.name;
    let reader = a
        .wait
        .then(|| TopicReader::at_end(&settings, &[&results_topic]))
        .transpose()?;
    let jobs_topic = cli::topic_for(&topology, PsiJobChunk::FULL_NAME)?.name;
    let ingest = cli::topic_for(&topology, VerificationRequest::FULL_NAME)?.name;
    let producer = PlainProducer::new(&settings)?;
    let registry = Registry::builtin();
    // The chunks are keyed by job id (its request's id, where psi reads the request after
    // tenancy); the request, like every request, by tenant id.
    for chunk in &chunks {
        producer.send(&jobs_topic, job_id.as_bytes(), &registry.encode(chunk)?)?;
    }
    producer.send(
        &ingest,
        credentials.tenant_id.as_bytes(),
        &registry.encode(&request)?,
    )?;
    producer.flush()?;
    eprintln!(
        "sent job {job_id} ({} tokens in {} chunk(s)) as request {}",
        tokens.len(),
        chunks.len(),
        request.request_id
    );
    let Some(reader) = reader else {
        println!("{job_id}");
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = Instant::now() + a.timeout;
    while Instant::now() < deadline {
        let Some(value) = reader
            .poll(Duration::from_millis(200))?
            .and_then(|r| r.value)
        else {
            continue;
        };
        let Ok(result) = registry.decode::<PsiJobResult>(&value) else {
            continue;
        };
        if result.job_id != job_id {
            continue;
        }
        return report(&a, &result, &identifiers);
    }
    bail!(
        "no result for job {job_id} within {:?}: is `pavilion run` running?",
        a.timeout
    )
}

fn report(a: &BatchArgs, result: &PsiJobResult, identifiers: &[String]) -> Result<ExitCode> {
    let reason = result
        .reason
        .as_ref()
        .map_or(String::new(), |r| format!(" ({r})"));
    if result.status != PsiJobStatus::Completed {
        println!("job {}: {:?}{reason}", result.job_id, result.status);
        return Ok(ExitCode::from(1));
    }
    println!(
        "job {}: {} of {} in {}'s set{reason}",
        result.job_id,
        result.cardinality.unwrap_or(0),
        result.submitted,
        result.provider_id
    );
    if result.disclosure == PsiDisclosure::Intersection {
        let matched: Vec<&str> = result
            .matched
            .iter()
            .filter_map(|&i| identifiers.get(i as usize).map(String::as_str))
            .collect();
        let text = matched.iter().map(|m| format!("{m}\n")).collect::<String>();
        match &a.out {
            Some(path) => {
                std::fs::write(path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!(
                    "wrote {} matched identifier(s) to {}",
                    matched.len(),
                    path.display()
                );
            }
            None => print!("{text}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
