//! `pavilion provider serve-evidence`: the provider's evidence service. It reads the broker's
//! proof requests from its own topic (`pavilion.evidence.requests.<provider>`), proves each
//! predicate over the attribute it committed to (`provider load --attribute`), and answers on
//! `pavilion.evidence.responses`, on the partition the request named.
//!
//! - **Bounded concurrency:** `--workers` proving threads take requests from a queue of at
//!   most `--queue`; when it is full the service stops reading Kafka until a worker frees a
//!   place (back-pressure, not memory growth).
//! - **Delivery:** a request's offset is committed only after its answer is acknowledged, so
//!   a killed service reads again what it had not answered; the broker also asks again after
//!   its retry interval, and ignores answers it no longer waits for. Requests past their
//!   deadline are skipped.
//! - **Retries cost no proofs:** a question already being proved is not queued again, and one
//!   answered lately is answered again from memory. Without this, a slow provider's backlog
//!   would grow by every retry the broker sends while it waits.
//! - `/healthz` (200 while the Kafka loop turns and the provers are loaded) and `/metrics`
//!   (answers by circuit and status, proving time, queue depth) on `--listen`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::Args;
use pavilion_kafka::{ensure_topics, GroupReader, PlainProducer, ReadRecord};
use pavilion_provider::evidence::{EvidenceProver, Provers};
use pavilion_runtime::clock::epoch_millis;
use pavilion_schemas::{Event, EvidenceRequest, EvidenceResponse, Registry};

use super::provider::{provider_topic, AttributesFileArg, KeyFileArgs};
use crate::cli::{self, ClusterArgs};

#[derive(Args)]
pub struct ServeEvidenceArgs {
    /// Provider id.
    pub name: String,
    /// Address for /healthz and /metrics.
    #[arg(
        long,
        env = "PAVILION_EVIDENCE_LISTEN",
        default_value = "127.0.0.1:8710"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub http: crate::cli::HttpServerArgs,
    /// Proving threads (a proof takes about 30 ms of one core; one per core at most).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Requests read and waiting for a worker, at most; reading pauses while it is full.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// This instance's name in the provider's consumer group (give each running instance its
    /// own; a restarted instance under the same name takes its partitions back at once).
    #[arg(long, default_value = "0")]
    pub instance: String,
    #[command(flatten)]
    pub book: AttributesFileArg,
    #[command(flatten)]
    pub keys: KeyFileArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// A request read from Kafka, with where it came from (to commit it once answered).
struct Job {
    record: ReadRecord,
    request: EvidenceRequest,
    question: Vec<u8>,
}

struct Answered {
    record: ReadRecord,
    reply_partition: i32,
    question: Vec<u8>,
    response: EvidenceResponse,
}

/// What identifies a question whatever the attempt: its answer is the same.
fn question_of(r: &EvidenceRequest) -> Vec<u8> {
    let mut key = Vec::with_capacity(128);
    for part in [
        &r.set_key[..],
        r.circuit.as_bytes(),
        r.attribute.as_bytes(),
        &r.bound.to_be_bytes(),
        &r.nonce,
    ] {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part);
    }
    key
}

/// The last answers given, by question, at most `capacity` of them.
struct RecentAnswers {
    capacity: usize,
    order: VecDeque<Vec<u8>>,
    answers: HashMap<Vec<u8>, EvidenceResponse>,
}

impl RecentAnswers {
    fn new(capacity: usize) -> Self {
        RecentAnswers {
            capacity,
            order: VecDeque::new(),
            answers: HashMap::new(),
        }
    }

    fn get(&self, question: &[u8]) -> Option<&EvidenceResponse> {
        self.answers.get(question)
    }

    fn remember(&mut self, question: Vec<u8>, response: EvidenceResponse) {
        if self.answers.insert(question.clone(), response).is_none() {
            self.order.push_back(question);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }
}

fn now_ms() -> i64 {
    epoch_millis(SystemTime::now())
}

pub fn serve(a: ServeEvidenceArgs) -> Result<ExitCode> {
    let tls = a.http.tls(a.listen, "--listen")?;
    // The key file proves the operator holds the provider's passphrase; the attributes are
    // sealed under the same one.
    let secrets = a.keys.open(&a.name)?;
    let passphrase = a.keys.passphrase()?;
    let book_path = a.book.path(&a.name);
    let Some(book) = a.book.open(&a.name, &passphrase)? else {
        bail!(
            "{} does not exist: load the provider's set with `pavilion provider load {} --attribute NAME:KIND …` first",
            book_path.display(),
            a.name
        );
    };
    let topology = cli::load(&a.cluster.file)?;
    let requests_topic = provider_topic(&a.cluster, EvidenceRequest::FULL_NAME, &a.name)?;
    let responses_topic = cli::topic_for(&topology, EvidenceResponse::FULL_NAME)?.name;
    let settings = cli::settings(&a.cluster, &format!("evidence-{}", a.name))?;
    tokio::runtime::Runtime::new()?
        .block_on(ensure_topics(&settings, &[&requests_topic]))
        .with_context(|| format!("creating {}", requests_topic.name))?;
    eprintln!(
        "loading the circuits' provers for {} worker(s) ({} members with attributes)",
        a.workers.max(1),
        book.len()
    );
    let service = Arc::new(EvidenceProver::new(book, secrets.bbs));
    let (jobs, answers) = start_workers(&service, a.workers.max(1), a.queue.max(1))?;

    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())?;
    }
    let last_turn = Arc::new(AtomicI64::new(now_ms()));
    serve_http(
        a.listen,
        tls,
        service.clone(),
        last_turn.clone(),
        shutdown.clone(),
    )?;

    let group = format!("{}.evidence.{}", topology.application, a.name);
    let reader = GroupReader::subscribe(&settings, &group, &a.instance, &[&requests_topic.name])?;
    let producer = PlainProducer::new(&settings)?;
    let registry = Registry::builtin();
    eprintln!(
        "answering proof requests for `{}` from {} on {} (group {group}); health and metrics on {}://{}",
        a.name,
        requests_topic.name,
        responses_topic,
        a.http.scheme(),
        a.listen
    );
    let mut book_modified = modified(&book_path);
    let mut book_checked = now_ms();
    let mut in_queue = 0usize;
    let mut in_flight: HashSet<Vec<u8>> = HashSet::new();
    let mut recent = RecentAnswers::new(10_000);
    while !shutdown.load(Ordering::SeqCst) {
        last_turn.store(now_ms(), Ordering::Relaxed);
        // Answers first: they free queue places.
        let mut done = Vec::new();
        while let Ok(answered) = answers.try_recv() {
            in_queue -= 1;
            in_flight.remove(&answered.question);
            producer.send_to(
                &responses_topic,
                answered.reply_partition,
                hex::encode(&answered.response.nonce).as_bytes(),
                &registry.encode(&answered.response)?,
            )?;
            recent.remember(answered.question, answered.response);
            done.push(answered.record);
        }
        if !done.is_empty() {
            producer.flush()?;
            for r in &done {
                reader.done(&r.topic, r.partition, r.offset)?;
            }
        }
        service.metrics.queue_depth.set(in_queue as i64);
        if now_ms() - book_checked > 2_000 {
            book_checked = now_ms();
            let now_modified = modified(&book_path);
            if now_modified != book_modified {
                book_modified = now_modified;
                match a.book.open(&a.name, &passphrase) {
                    Ok(Some(book)) => {
                        eprintln!("attributes reloaded: {} members", book.len());
                        service.replace_book(book);
                    }
                    Ok(None) => tracing::warn!("the attributes file is gone; keeping the last one"),
                    Err(e) => tracing::warn!(error = %e, "reloading the attributes file"),
                }
            }
        }
        let wait = if in_queue > 0 { 5 } else { 100 };
        let Some(record) = reader.poll(Duration::from_millis(wait))? else {
            continue;
        };
        let request = match record
            .value
            .as_deref()
            .map(|v| registry.decode::<EvidenceRequest>(v))
        {
            Some(Ok(request)) => request,
            Some(Err(e)) => {
                tracing::warn!(topic = record.topic, partition = record.partition, offset = record.offset, error = %e, "not a proof request; skipped");
                reader.done(&record.topic, record.partition, record.offset)?;
                continue;
            }
            None => {
                reader.done(&record.topic, record.partition, record.offset)?;
                continue;
            }
        };
        if request.deadline < now_ms() {
            service.metrics.expired.inc();
            reader.done(&record.topic, record.partition, record.offset)?;
            continue;
        }
        let question = question_of(&request);
        if let Some(response) = recent.get(&question) {
            service.metrics.repeated.inc();
            producer.send_to(
                &responses_topic,
                request.reply_partition,
                hex::encode(&response.nonce).as_bytes(),
                &registry.encode(response)?,
            )?;
            producer.flush()?;
            reader.done(&record.topic, record.partition, record.offset)?;
            continue;
        }
        if !in_flight.insert(question.clone()) {
            // Being proved: its answer goes to the same partition.
            service.metrics.repeated.inc();
            reader.done(&record.topic, record.partition, record.offset)?;
            continue;
        }
        in_queue += 1;
        service.metrics.queue_depth.set(in_queue as i64);
        // Blocks while every queue place is taken: reading waits for the workers.
        jobs.send(Job {
            record,
            request,
            question,
        })
        .map_err(|_| anyhow::anyhow!("every proving worker has stopped"))?;
    }
    eprintln!("stopping: {in_queue} request(s) not answered will be read again by the next run");
    Ok(ExitCode::SUCCESS)
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn start_workers(
    service: &Arc<EvidenceProver>,
    workers: usize,
    queue: usize,
) -> Result<(mpsc::SyncSender<Job>, mpsc::Receiver<Answered>)> {
    let (jobs, inbox) = mpsc::sync_channel::<Job>(queue);
    let inbox = Arc::new(std::sync::Mutex::new(inbox));
    let (answer, answers) = mpsc::channel();
    let (ready, loaded) = mpsc::channel();
    for n in 0..workers {
        let (service, inbox, answer) = (service.clone(), inbox.clone(), answer.clone());
        let ready = ready.clone();
        std::thread::Builder::new()
            .name(format!("prover-{n}"))
            .spawn(move || {
                // Each worker compiles its own witness generators, all at once.
                let mut provers = match Provers::load() {
                    Ok(p) => {
                        let _ = ready.send(Ok(()));
                        p
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                loop {
                    let job = match inbox.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    let response = service.answer(&mut provers, &job.request, now_ms());
                    let answered = Answered {
                        record: job.record,
                        reply_partition: job.request.reply_partition,
                        question: job.question,
                        response,
                    };
                    if answer.send(answered).is_err() {
                        return;
                    }
                }
            })?;
    }
    // A broken artifact stops the service at start, not at its first request.
    for _ in 0..workers {
        loaded
            .recv()
            .context("a proving worker stopped while loading")?
            .context("loading the circuits' provers")?;
    }
    Ok((jobs, answers))
}

fn serve_http(
    listen: SocketAddr,
    tls: Option<pavilion_http::ServerTls>,
    service: Arc<EvidenceProver>,
    last_turn: Arc<AtomicI64>,
    shutdown: Arc<AtomicBool>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("listening on {listen}"))?;
    let metrics = service.clone();
    let router = Router::new()
        .route(
            "/healthz",
            get(move || async move {
                let idle_ms = now_ms() - last_turn.load(Ordering::Relaxed);
                if idle_ms < 30_000 {
                    (StatusCode::OK, "ok\n".to_owned())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the Kafka loop has not turned for {idle_ms} ms\n"),
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move { metrics.metrics.render() }),
        );
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = pavilion_http::serve(listener, tls, router, cli::until(shutdown)).await;
            })
        })?;
    Ok(())
}
