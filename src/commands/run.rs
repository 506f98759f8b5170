//! `pavilion run`: build the tasks from topology.yaml and run each on `--threads` stream
//! threads, with `/metrics`, `/healthz` and `/readyz` served beside them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use axum::{http::StatusCode, routing::get, Router};
use clap::Args;
use pavilion_kafka::{run_task, KafkaSettings};
use pavilion_runtime::clock::SystemClock;
use pavilion_runtime::telemetry::{StreamThread, TaskState, Telemetry};
use pavilion_runtime::topology::Topology;
use pavilion_runtime::{Resources, TaskRunner};
use pavilion_schemas::Registry;
use pavilion_signing::{JwsSigner, SharedSigner, SIGNER};

use crate::cli::{self, parse_duration, ClusterArgs};
use crate::commands::acls::Role;
use crate::commands::keys::SigningKeys;
use crate::kinds;

/// How a process runs its tasks.
#[derive(Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Run only this task (a stage name, or the first stage of a fused group); repeatable.
    /// Default: every task of the topology.
    #[arg(long = "task", value_name = "TASK")]
    pub tasks: Vec<String>,
    /// Stable identity of this process. A restarted process must keep it: it takes back its
    /// partitions at once (static membership) and fences its predecessor's transactions.
    #[arg(long, env = "PAVILION_INSTANCE", default_value = "instance-1")]
    pub instance: String,
    /// Stream threads per task (Kafka Streams' num.stream.threads): each is a member of the
    /// task's group with its own consumer, transactional producer (ids `<instance>-<n>` for
    /// thread n ≥ 1) and state, so one process works on several partitions at once; threads
    /// beyond the partitions stay idle. Default: the machine's cores.
    #[arg(long, env = "PAVILION_THREADS")]
    pub threads: Option<NonZeroUsize>,
    /// Local RocksDB state (a cache of the changelogs; safe to delete while stopped).
    #[arg(long, env = "PAVILION_STATE_DIR", default_value = ".pavilion-state")]
    pub state_dir: PathBuf,
    /// Address of /metrics, /healthz and /readyz; `off` disables them.
    #[arg(long, env = "PAVILION_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// Commit a transaction at least this often while input keeps coming.
    #[arg(long, env = "PAVILION_COMMIT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub commit_interval: Duration,
    /// Commit a transaction this old as soon as the input is drained (lower: less latency
    /// at moderate load, more transactions); or three times as old as the last commit took,
    /// if longer, so commits never take most of a task's time against a slow broker.
    #[arg(long, env = "PAVILION_IDLE_COMMIT_AFTER", default_value = "10ms", value_parser = parse_duration)]
    pub idle_commit_after: Duration,
    /// How long a dead process keeps its partitions before others take them.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub session_timeout: Duration,
    /// How long a dead process's open transaction can block readers.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub transaction_timeout: Duration,
    /// The decision-signing keys a signing stage needs (`pavilion keys generate`): a key
    /// ring directory (`--dir`) or an HSM token (`--hsm-token`). Their JWKS is served at
    /// /.well-known/jwks.json beside /metrics.
    #[command(flatten)]
    pub signing: crate::commands::keys::RingArgs,
    /// The per-subject audit keys an audit stage encrypts subject-linked fields under
    /// (created on first use; passphrase from $PAVILION_SUBJECT_KEYS_PASSPHRASE). Its
    /// checkpoints are signed with the signing keys above.
    #[arg(long, env = "PAVILION_SUBJECT_KEYS")]
    pub subject_keys: Option<PathBuf>,
    /// /healthz fails (503, naming the thread as `<task>#<n>`) when a task's thread has made
    /// no progress for this long: stuck restoring, failing over and over before it runs, or
    /// blocked in a call.
    #[arg(long, env = "PAVILION_STUCK_AFTER", default_value = "60s", value_parser = parse_duration)]
    pub stuck_after: Duration,
    /// On SIGTERM or SIGINT, tasks commit what they have and stop; a process still running
    /// this long after the signal exits anyway (exit code 2). Nothing committed is lost:
    /// open transactions are aborted by the broker, as after a crash. A second signal exits
    /// at once.
    #[arg(long, env = "PAVILION_STOP_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub stop_timeout: Duration,
    /// Each task connects as its own principal, with the credential `pavilion acls apply
    /// --credentials-dir DIR` wrote for it (`DIR/<application>.task.<task>.properties`, laid
    /// over `--kafka-config`). Without it every task uses `--kafka-config`'s identity.
    #[arg(long, env = "PAVILION_KAFKA_CREDENTIALS", value_name = "DIR")]
    pub kafka_credentials: Option<PathBuf>,
    #[command(flatten)]
    pub http: cli::HttpServerArgs,
}

impl RunArgs {
    /// `--threads`, or the machine's cores.
    pub fn threads(&self) -> usize {
        self.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            NonZeroUsize::get,
        )
    }

    pub fn settings(&self) -> Result<KafkaSettings> {
        let mut s = cli::settings(&self.cluster, &self.instance)?;
        s.state_dir = self.state_dir.clone();
        s.commit_interval = self.commit_interval;
        s.idle_commit_after = self.idle_commit_after;
        s.session_timeout = self.session_timeout;
        s.transaction_timeout = self.transaction_timeout;
        Ok(s)
    }
}

/// Each task's settings: `base`, with the task's own credential from `credentials` laid over
/// it when a directory is given.
pub fn task_settings(
    topology: &Topology,
    tasks: &[String],
    base: &KafkaSettings,
    credentials: Option<&Path>,
) -> Result<BTreeMap<String, KafkaSettings>> {
    tasks
        .iter()
        .map(|task| {
            let mut settings = base.clone();
            if let Some(dir) = credentials {
                let user = Role::Task(task.clone()).user(&topology.application);
                let file = dir.join(format!("{user}.properties"));
                let own = pavilion_kafka::read_client_properties(&file).with_context(|| {
                    format!(
                        "task `{task}` has no credential in {} (pavilion acls apply --credentials-dir {0})",
                        dir.display()
                    )
                })?;
                settings.overrides.extend(own);
            }
            Ok((task.clone(), settings))
        })
        .collect()
}

/// What the binary hands its stages (see `pavilion_runtime::Resources`).
fn resources(
    topology: &Topology,
    tasks: &[String],
    keys: &crate::commands::keys::RingArgs,
    subject_keys: Option<&std::path::Path>,
) -> Result<(Resources, Option<Arc<SigningKeys>>)> {
    let mut resources = Resources::default();
    if let Some(region) = &topology.region {
        resources.insert(
            pavilion_runtime::REGION,
            topology.regions.regions[region].clone(),
        );
    }
    let runs = |kind: &str| {
        tasks.iter().any(|t| {
            topology.tasks[t]
                .stages
                .iter()
                .any(|s| topology.stages[s].kind == kind)
        })
    };
    let (signs, audits) = (
        runs(pavilion_signing::KIND.name),
        runs(pavilion_audit::KIND.name),
    );
    if audits {
        let Some(dir) = subject_keys else {
            bail!("an audit stage runs here: give it --subject-keys DIR (and $PAVILION_SUBJECT_KEYS_PASSPHRASE) for the per-subject keys");
        };
        let store = Arc::new(crate::commands::audit::subject_keys(dir)?);
        let keys: pavilion_audit::SharedSubjectKeys = Arc::new(SubjectKeys(store));
        resources.insert(pavilion_audit::SUBJECT_KEYS, keys);
    }
    let Some(ring) = SigningKeys::open(keys)? else {
        if signs || audits {
            bail!("a signing or audit stage runs here: give it keys with --dir DIR or --hsm-token LABEL (create them with `pavilion keys generate`)");
        }
        return Ok((resources, None));
    };
    let ring = Arc::new(ring);
    let place = SigningKeys::describe(keys);
    let current = ring
        .current_key_id()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("opening the signing keys at {place}"))?;
    eprintln!("pavilion: signing with key {current} from {place}");
    let signer: SharedSigner = Arc::new(crate::commands::keys::SharedKeys(ring.clone()));
    resources.insert(SIGNER, signer);
    let checkpoints: pavilion_audit::SharedCheckpointSigner =
        Arc::new(crate::commands::keys::SharedKeys(ring.clone()));
    resources.insert(pavilion_audit::CHECKPOINT_SIGNER, checkpoints);
    Ok((resources, Some(ring)))
}

/// The subject key store as the audit stage's resource.
struct SubjectKeys(Arc<pavilion_keys::subjects::SubjectKeyStore>);

impl pavilion_audit::SubjectKeys for SubjectKeys {
    fn key(&self, key_id: &str) -> Result<Option<[u8; 32]>, String> {
        self.0.get_or_create(key_id).map_err(|e| e.to_string())
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let topology = Arc::new(cli::load(&args.cluster.file)?);
    let tasks = select_tasks(&topology, &args.tasks)?;
    let (resources, ring) = resources(
        &topology,
        &tasks,
        &args.signing,
        args.subject_keys.as_deref(),
    )?;
    let telemetry = Telemetry::new();
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // The conditional one first: it exits only when the flag is already set (a second
        // signal), before the plain one sets it for the first.
        signal_hook::flag::register_conditional_shutdown(signal, 2, shutdown.clone())?;
        signal_hook::flag::register(signal, shutdown.clone())?;
    }
    stop_within(args.stop_timeout, shutdown.clone())?;
    if args.metrics_addr != "off" {
        let addr: SocketAddr = args
            .metrics_addr
            .parse()
            .with_context(|| format!("--metrics-addr `{}` is not HOST:PORT", args.metrics_addr))?;
        let tls = args.http.tls(addr, "--metrics-addr")?;
        serve_metrics(addr, tls, telemetry.clone(), ring, args.stuck_after)?;
    }
    let threads = args.threads();
    eprintln!(
        "pavilion: running {} as instance `{}` against {}, {threads} stream thread{} per task",
        tasks.join(", "),
        args.instance,
        args.cluster.bootstrap,
        if threads == 1 { "" } else { "s" }
    );
    let settings = task_settings(
        &topology,
        &tasks,
        &args.settings()?,
        args.kafka_credentials.as_deref(),
    )?;
    let handles = start(
        &topology, &tasks, threads, &settings, &telemetry, &shutdown, &resources,
    );
    let mut failed = false;
    for (thread, handle) in handles {
        if let Err(e) = handle.join().expect("stream thread panicked") {
            eprintln!("task {thread} failed: {e:#}");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The named tasks, or all of them.
pub fn select_tasks(topology: &Topology, names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(topology.tasks.keys().cloned().collect());
    }
    for name in names {
        if !topology.tasks.contains_key(name) {
            bail!(
                "no task `{name}` (tasks: {}; a fused group's task is named after its first stage)",
                topology
                    .tasks
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(names.to_vec())
}

/// Starts `threads` stream threads per task, named `<task>#<n>`; each returns when `shutdown`
/// is set. Every thread is registered as starting before any runs, so `/readyz` cannot answer
/// 200 while a thread has yet to join its group.
pub fn start(
    topology: &Arc<Topology>,
    tasks: &[String],
    threads: usize,
    settings: &BTreeMap<String, KafkaSettings>,
    telemetry: &Arc<Telemetry>,
    shutdown: &Arc<AtomicBool>,
    resources: &Resources,
) -> Vec<(String, JoinHandle<Result<()>>)> {
    let threads: Vec<(&String, usize)> = tasks
        .iter()
        .flat_map(|task| (0..threads).map(move |index| (task, index)))
        .collect();
    for &(task, index) in &threads {
        telemetry.task_state(StreamThread { task, index }, TaskState::Starting);
    }
    threads
        .into_iter()
        .map(|(task, index)| {
            let name = StreamThread { task, index }.to_string();
            let (topology, task, settings, telemetry, shutdown, resources) = (
                topology.clone(),
                task.clone(),
                settings[task].clone(),
                telemetry.clone(),
                shutdown.clone(),
                resources.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let kinds = kinds::all();
                    let factory = {
                        let (topology, task, telemetry) =
                            (topology.clone(), task.clone(), telemetry.clone());
                        move || {
                            let mut runner = TaskRunner::new(
                                &topology,
                                &task,
                                &kinds,
                                Registry::builtin(),
                                Arc::new(SystemClock),
                                telemetry.clone(),
                            )?;
                            runner.attach_resources(resources.clone());
                            Ok(runner)
                        }
                    };
                    run_task(
                        &topology, &task, index, &factory, &settings, telemetry, &shutdown,
                    )
                })
                .expect("spawning a stream thread");
            (name, handle)
        })
        .collect()
}

/// Once `shutdown` is set, gives the tasks `timeout` to stop, then ends the process: a task
/// blocked in a broker call must not keep an operator's SIGTERM waiting without bound.
fn stop_within(timeout: Duration, shutdown: Arc<AtomicBool>) -> Result<()> {
    std::thread::Builder::new()
        .name("stop-watch".into())
        .spawn(move || {
            while !shutdown.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(timeout);
            eprintln!("pavilion: tasks still running {timeout:?} after the stop signal; exiting (open transactions are aborted by the broker)");
            std::process::exit(2);
        })?;
    Ok(())
}

/// Serves Prometheus metrics and health on its own thread and small async runtime.
pub fn serve_metrics(
    addr: SocketAddr,
    tls: Option<pavilion_http::ServerTls>,
    telemetry: Arc<Telemetry>,
    ring: Option<Arc<SigningKeys>>,
    stuck_after: Duration,
) -> Result<()> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("binding the metrics endpoint on {addr} (taken? use --metrics-addr)")
    })?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("metrics runtime");
            runtime.block_on(async move {
                let metrics = telemetry.clone();
                let ready = telemetry.clone();
                let health = telemetry.clone();
                let jwks = move || {
                    let ring = ring.clone();
                    async move {
                        match ring.as_ref().map(|r| r.jwks()) {
                            Some(Ok(jwks)) => (StatusCode::OK, jwks.to_string()),
                            Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                            None => (StatusCode::NOT_FOUND, "no signing keys here\n".into()),
                        }
                    }
                };
                let app = Router::new()
                    .route("/metrics", get(move || async move { metrics.render() }))
                    .route("/.well-known/jwks.json", get(jwks))
                    .route(
                        "/healthz",
                        get(move || async move {
                            let stuck = health.stuck(stuck_after);
                            if stuck.is_empty() {
                                (StatusCode::OK, "ok\n".to_owned())
                            } else {
                                (StatusCode::SERVICE_UNAVAILABLE, stuck.join("\n") + "\n")
                            }
                        }),
                    )
                    .route(
                        "/readyz",
                        get(move || async move {
                            let states = format!("{:?}\n", ready.states());
                            if ready.ready() {
                                (StatusCode::OK, states)
                            } else {
                                (StatusCode::SERVICE_UNAVAILABLE, states)
                            }
                        }),
                    );
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                if let Err(e) =
                    pavilion_http::serve(listener, tls, app, std::future::pending()).await
                {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            });
        })?;
    Ok(())
}

/// Every task of a topology running in this process (demo, benchmarks), stopped on drop.
pub struct InProcess {
    pub telemetry: Arc<Telemetry>,
    shutdown: Arc<AtomicBool>,
    handles: Vec<(String, JoinHandle<Result<()>>)>,
}

impl InProcess {
    /// Starts every task on `threads` stream threads and waits until all are running and
    /// `loaded` says so too.
    pub fn start(
        topology: &Arc<Topology>,
        settings: &KafkaSettings,
        credentials: Option<&Path>,
        threads: usize,
        loaded: impl Fn(&Telemetry) -> bool,
        timeout: Duration,
    ) -> Result<Self> {
        let telemetry = Telemetry::new();
        let shutdown = Arc::new(AtomicBool::new(false));
        let tasks = select_tasks(topology, &[])?;
        let handles = start(
            topology,
            &tasks,
            threads,
            &task_settings(topology, &tasks, settings, credentials)?,
            &telemetry,
            &shutdown,
            &Resources::default(),
        );
        let pipeline = InProcess {
            telemetry,
            shutdown,
            handles,
        };
        let started = std::time::Instant::now();
        while !(pipeline.telemetry.ready() && loaded(&pipeline.telemetry)) {
            if started.elapsed() > timeout {
                bail!(
                    "pipeline not ready after {timeout:?}: {:?}",
                    pipeline.telemetry.states()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pipeline)
    }

    /// Shuts every task down cleanly (final commit) and reports the first failure.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut result = Ok(());
        for (_, handle) in self.handles.drain(..) {
            let outcome = handle.join().expect("stream thread");
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for (_, handle) in self.handles.drain(..) {
            handle.join().ok();
        }
    }
}
