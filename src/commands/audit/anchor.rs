//! `pavilion anchor deploy | run`: the anchor contract, and the loop that posts every signed
//! checkpoint's root on chain, in order per log, one transaction each, and records the
//! receipt on the anchors topic. The chain is the source of truth for what is anchored: a
//! checkpoint found on chain is not sent again (a crash between sending and recording costs
//! a look-up, never a second anchor).
//!
//! `anchor run` serves `/metrics` and `/healthz` (see [`AnchorMetrics`]) so an operator sees
//! how far anchoring trails the log and when it last succeeded; the alerts in
//! `ops/prometheus/alerts.yml` read them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use axum::{routing::get, Router};
use clap::{Args, Subcommand};
use pavilion_chain::{Address, Anchorer, ChainConfig, ChainError, RetryPolicy};
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_runtime::clock::epoch_millis;
use pavilion_schemas::{AnchorReceipt, Checkpoint, CheckpointRef, Event, Registry};
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry as PromRegistry,
};

use crate::cli::{self, parse_duration, ClusterArgs};

/// Anchoring commands.
#[derive(Subcommand)]
pub enum AnchorCommand {
    /// Deploy the AuditAnchor contract (connectors/chain/contracts) from $PAVILION_CHAIN_KEY's
    /// account, the only one that may anchor with it; prints its address.
    Deploy(ChainArgs),
    /// Anchor every checkpoint not anchored yet, in order, then follow new ones until
    /// SIGTERM (or, with --once, stop when caught up).
    Run(Box<RunArgs>),
}

/// The chain.
#[derive(Args, Clone)]
pub struct ChainArgs {
    /// JSON-RPC endpoint. The sending key comes from $PAVILION_CHAIN_KEY (hex), never a flag.
    #[arg(
        long,
        env = "PAVILION_CHAIN_RPC",
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc_url: String,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub chain: ChainArgs,
    /// The AuditAnchor contract (`pavilion anchor deploy`).
    #[arg(long, env = "PAVILION_ANCHOR_CONTRACT")]
    pub contract: Address,
    /// Blocks after inclusion before an anchor counts (0 on a dev chain that mines only when
    /// sent a transaction; a dozen or more on a public chain).
    #[arg(long, env = "PAVILION_ANCHOR_CONFIRMATIONS", default_value_t = 0)]
    pub confirmations: u64,
    /// First block to look for earlier anchors in (the contract's deployment block).
    #[arg(long, default_value_t = 0)]
    pub from_block: u64,
    /// How long one checkpoint may keep failing (chain down) before the loop gives up.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub give_up_after: Duration,
    /// Stop once every checkpoint present is anchored.
    #[arg(long)]
    pub once: bool,
    /// Address of /metrics and /healthz; `off` disables them.
    #[arg(
        long,
        env = "PAVILION_ANCHOR_METRICS_ADDR",
        default_value = "127.0.0.1:9466"
    )]
    pub metrics_addr: String,
    #[command(flatten)]
    pub http: crate::cli::HttpServerArgs,
}

fn chain_key() -> Result<String> {
    let key = std::env::var("PAVILION_CHAIN_KEY")
        .context("set PAVILION_CHAIN_KEY to the hex private key of the anchoring account")?;
    if key.trim().is_empty() {
        bail!("PAVILION_CHAIN_KEY is empty");
    }
    Ok(key)
}

pub fn run(command: AnchorCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    match command {
        AnchorCommand::Deploy(args) => {
            let config = ChainConfig::new(&args.rpc_url, chain_key()?);
            let d = runtime
                .block_on(pavilion_chain::deploy(&config))
                .with_context(|| format!("deploying on {}", args.rpc_url))?;
            eprintln!(
                "AuditAnchor deployed in block {} (tx 0x{}); anchor with:",
                d.block_number,
                hex::encode(d.tx_hash)
            );
            println!("{}", d.address);
            eprintln!(
                "  pavilion anchor run --contract {} --from-block {}",
                d.address, d.block_number
            );
            Ok(ExitCode::SUCCESS)
        }
        AnchorCommand::Run(args) => anchor_loop(&runtime, &args),
    }
}

fn anchor_loop(runtime: &tokio::runtime::Runtime, args: &RunArgs) -> Result<ExitCode> {
    let metrics_endpoint = match args.metrics_addr.as_str() {
        "off" => None,
        addr => {
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("--metrics-addr `{addr}` is not HOST:PORT"))?;
            Some((addr, args.http.tls(addr, "--metrics-addr")?))
        }
    };
    let topology = cli::load(&args.cluster.file)?;
    let checkpoints = cli::topic_for(&topology, Checkpoint::FULL_NAME)?.name;
    let anchors = cli::topic_for(&topology, AnchorReceipt::FULL_NAME)?.name;
    let mut config = ChainConfig::new(&args.chain.rpc_url, chain_key()?);
    config.contract = Some(args.contract);
    config.confirmations = args.confirmations;
    config.from_block = args.from_block;
    let anchorer = Anchorer::connect(&config)?;
    let metrics = AnchorMetrics::new();
    if let Some((addr, tls)) = metrics_endpoint {
        let listener = std::net::TcpListener::bind(addr).with_context(|| {
            format!("binding the anchor metrics endpoint on {addr} (taken? use --metrics-addr)")
        })?;
        serve_metrics(runtime, listener, tls, metrics.clone())?;
    }
    let policy = RetryPolicy {
        timeout: args.give_up_after,
        ..RetryPolicy::default()
    };
    let registry = Registry::builtin();
    let settings = cli::settings(&args.cluster, "anchor")?;
    // What is recorded already: the largest anchored size per log.
    let mut recorded: BTreeMap<String, i64> = BTreeMap::new();
    for (_, r) in cli::read_all::<AnchorReceipt>(&args.cluster, &anchors)? {
        metrics.recorded_before(&r.checkpoint.origin, r.checkpoint.tree_size, r.anchored_at);
        let size = recorded.entry(r.checkpoint.origin).or_insert(0);
        *size = (*size).max(r.checkpoint.tree_size);
    }
    let producer = PlainProducer::new(&settings)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())?;
    }
    let reader = TopicReader::new(&settings, &[&checkpoints])?;
    eprintln!(
        "pavilion: anchoring {checkpoints} to {} on {} ({} logs anchored before)",
        args.contract,
        args.chain.rpc_url,
        recorded.len()
    );
    let mut anchored = 0u64;
    while !shutdown.load(Ordering::Relaxed) {
        // Checkpoints of one log share a key, hence a partition: they arrive in order.
        let batch = if args.once {
            reader.read_to_end(Duration::from_secs(60))?
        } else {
            let mut batch = Vec::new();
            while let Some(r) = reader.poll(Duration::from_millis(500))? {
                batch.push(r);
                if batch.len() >= 100 {
                    break;
                }
            }
            batch
        };
        // Decoded up front so the whole batch counts as seen (and pending) before the first
        // anchor, which may block for a long time on a chain outage; errors still surface in
        // order, when the loop reaches the bad record.
        let decoded: Vec<Result<Checkpoint>> = batch
            .into_iter()
            .filter_map(|record| {
                let value = record.value?;
                Some(registry.decode(&value).with_context(|| {
                    format!("{checkpoints}/{}@{}", record.partition, record.offset)
                }))
            })
            .collect();
        let mut pending = recorded.clone();
        for c in decoded.iter().flatten() {
            let size = pending.entry(c.origin.clone()).or_insert(0);
            metrics.checkpoint_seen(&c.origin, c.tree_size, c.tree_size > *size);
            *size = (*size).max(c.tree_size);
        }
        for c in decoded {
            let c = c.inspect_err(|_| metrics.failed("bad_checkpoint"))?;
            if recorded.get(&c.origin).is_some_and(|s| *s >= c.tree_size) {
                continue;
            }
            let root: [u8; 32] = c.root_hash.clone().try_into().map_err(|_| {
                metrics.failed("bad_checkpoint");
                anyhow::anyhow!("{}: a root that is not 32 bytes", c.origin)
            })?;
            let receipt = runtime
                .block_on(anchorer.anchor_with_retry(&c.origin, c.tree_size as u64, root, &policy))
                .inspect_err(|e| metrics.failed(chain_error_kind(e)))
                .with_context(|| format!("anchoring {} at size {}", c.origin, c.tree_size))?;
            let record = AnchorReceipt {
                checkpoint: CheckpointRef {
                    origin: c.origin.clone(),
                    tree_size: c.tree_size,
                    root_hash: c.root_hash.clone(),
                },
                chain_id: receipt.chain_id as i64,
                contract_address: receipt.contract_address.to_vec(),
                tx_hash: receipt.tx_hash.to_vec(),
                block_number: receipt.block_number as i64,
                gas_used: receipt.gas_used as i64,
                anchored_at: epoch_millis(std::time::SystemTime::now()),
            };
            producer
                .send(&anchors, c.origin.as_bytes(), &registry.encode(&record)?)
                .and_then(|()| producer.flush())
                .inspect_err(|_| metrics.failed("record_receipt"))?;
            recorded.insert(c.origin.clone(), c.tree_size);
            metrics.anchored(&c.origin, c.tree_size, &receipt);
            anchored += 1;
            println!(
                "anchored {} size {} in block {} (tx 0x{}, {} gas{})",
                c.origin,
                c.tree_size,
                receipt.block_number,
                hex::encode(receipt.tx_hash),
                receipt.gas_used,
                if receipt.already_anchored {
                    ", found on chain"
                } else {
                    ""
                }
            );
        }
        if args.once {
            break;
        }
    }
    eprintln!("pavilion: {anchored} checkpoints anchored");
    Ok(ExitCode::SUCCESS)
}

/// The anchoring loop's metrics, on their own registry. Lag is measured in what the loop has
/// read: checkpoints still in the topic are invisible to it, so an outage is caught by
/// `pavilion_anchor_last_success_timestamp_seconds` against the audit stage's checkpoint
/// output (see `ops/prometheus/alerts.yml`), not by these gauges alone.
pub struct AnchorMetrics {
    registry: PromRegistry,
    seen: IntCounterVec,
    anchored: IntCounterVec,
    last_anchored_size: IntGaugeVec,
    latest_size: IntGaugeVec,
    lag: IntGaugeVec,
    last_success: Gauge,
    gas: Histogram,
    errors: IntCounterVec,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &PromRegistry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl AnchorMetrics {
    /// Fresh metrics.
    pub fn new() -> Arc<Self> {
        let r = PromRegistry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), &["origin"]).expect("valid metric"),
            )
        };
        Arc::new(AnchorMetrics {
            seen: counter(
                "pavilion_anchor_checkpoints_seen_total",
                "Checkpoints read from the checkpoints topic, anchored already or not.",
                &["origin"],
            ),
            anchored: counter(
                "pavilion_anchor_anchored_total",
                "Checkpoints anchored (or found anchored on chain) and recorded by this process.",
                &["origin"],
            ),
            last_anchored_size: gauge(
                "pavilion_anchor_last_anchored_tree_size",
                "Tree size of the log's latest anchored checkpoint (from the anchors topic at start).",
            ),
            latest_size: gauge(
                "pavilion_anchor_latest_checkpoint_tree_size",
                "Tree size of the log's latest checkpoint read; minus the last anchored size, \
                 the entries not anchored yet.",
            ),
            lag: gauge(
                "pavilion_anchor_lag_checkpoints",
                "Checkpoints read but not anchored yet.",
            ),
            last_success: register(
                &r,
                Gauge::with_opts(Opts::new(
                    "pavilion_anchor_last_success_timestamp_seconds",
                    "Unix time of the latest anchor recorded (by this process, or before it \
                     started according to the anchors topic); 0 when there is none.",
                ))
                .expect("valid metric"),
            ),
            gas: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "pavilion_anchor_gas_used",
                        "Gas of each anchor transaction sent (not of anchors found on chain).",
                    )
                    .buckets(vec![
                        20_000.0, 25_000.0, 30_000.0, 40_000.0, 50_000.0, 75_000.0, 100_000.0,
                        200_000.0,
                    ]),
                )
                .expect("valid metric"),
            ),
            errors: counter(
                "pavilion_anchor_errors_total",
                "Failures that stopped the anchoring loop, by kind (chain errors after their \
                 retries, undecodable checkpoints, receipts that could not be recorded).",
                &["kind"],
            ),
            registry: r,
        })
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        out
    }

    /// A receipt found on the anchors topic at start.
    fn recorded_before(&self, origin: &str, tree_size: i64, anchored_at_ms: i64) {
        let size = self.last_anchored_size.with_label_values(&[origin]);
        size.set(size.get().max(tree_size));
        // Present (at 0) from the start, so "not anchored" alerts see every known log.
        self.lag.with_label_values(&[origin]);
        let at = anchored_at_ms as f64 / 1000.0;
        if at > self.last_success.get() {
            self.last_success.set(at);
        }
    }

    /// A checkpoint was read; `pending` when it is newer than what is anchored.
    fn checkpoint_seen(&self, origin: &str, tree_size: i64, pending: bool) {
        self.seen.with_label_values(&[origin]).inc();
        let latest = self.latest_size.with_label_values(&[origin]);
        latest.set(latest.get().max(tree_size));
        let lag = self.lag.with_label_values(&[origin]);
        if pending {
            lag.inc();
        }
    }

    /// A checkpoint's anchor was recorded.
    fn anchored(&self, origin: &str, tree_size: i64, receipt: &pavilion_chain::AnchorReceipt) {
        self.anchored.with_label_values(&[origin]).inc();
        self.last_anchored_size
            .with_label_values(&[origin])
            .set(tree_size);
        let lag = self.lag.with_label_values(&[origin]);
        lag.set((lag.get() - 1).max(0));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.set(now);
        if !receipt.already_anchored {
            self.gas.observe(receipt.gas_used as f64);
        }
    }

    /// The loop stopped on an error of this kind.
    fn failed(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }
}

/// A small fixed set of error kinds, so the label stays low-cardinality.
fn chain_error_kind(e: &ChainError) -> &'static str {
    match e {
        ChainError::RetriesExhausted { .. } => "retries_exhausted",
        ChainError::Rpc { .. } => "rpc",
        ChainError::NotOwner { .. } => "not_owner",
        ChainError::Reverted { .. } => "reverted",
        ChainError::ReceiptTimeout { .. } | ChainError::PendingTimeout { .. } => "timeout",
        ChainError::Reorged { .. } => "reorged",
        ChainError::Sign { .. } => "sign",
        ChainError::InvalidUrl { .. }
        | ChainError::InvalidKey { .. }
        | ChainError::NoContract
        | ChainError::NoCode { .. } => "config",
        _ => "other",
    }
}

/// Serves /metrics and /healthz on the command's runtime (its worker threads answer while
/// the loop blocks on the chain).
fn serve_metrics(
    runtime: &tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    tls: Option<pavilion_http::ServerTls>,
    metrics: Arc<AnchorMetrics>,
) -> Result<()> {
    listener.set_nonblocking(true)?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).context("anchor metrics listener")?
    };
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }));
    runtime.spawn(async move {
        if let Err(e) = pavilion_http::serve(listener, tls, app, std::future::pending()).await {
            tracing::error!(error = %e, "anchor metrics endpoint stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(gas_used: u64, already_anchored: bool) -> pavilion_chain::AnchorReceipt {
        pavilion_chain::AnchorReceipt {
            chain_id: 31337,
            contract_address: Address::ZERO,
            tx_hash: [1; 32],
            block_number: 7,
            gas_used,
            already_anchored,
        }
    }

    #[test]
    fn anchor_metrics_follow_the_loop_and_pass_promtool() {
        let m = AnchorMetrics::new();
        m.recorded_before("pavilion/audit/0", 1000, 1_700_000_000_000);
        m.checkpoint_seen("pavilion/audit/0", 1000, false);
        m.checkpoint_seen("pavilion/audit/0", 2000, true);
        m.checkpoint_seen("pavilion/audit/0", 2500, true);
        m.anchored("pavilion/audit/0", 2000, &receipt(24_300, false));
        m.failed(chain_error_kind(&ChainError::NoContract));
        let text = m.render();
        for line in [
            "pavilion_anchor_checkpoints_seen_total{origin=\"pavilion/audit/0\"} 3",
            "pavilion_anchor_anchored_total{origin=\"pavilion/audit/0\"} 1",
            "pavilion_anchor_last_anchored_tree_size{origin=\"pavilion/audit/0\"} 2000",
            "pavilion_anchor_latest_checkpoint_tree_size{origin=\"pavilion/audit/0\"} 2500",
            "pavilion_anchor_lag_checkpoints{origin=\"pavilion/audit/0\"} 1",
            "pavilion_anchor_gas_used_count 1",
            "pavilion_anchor_errors_total{kind=\"config\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        let last_success: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("pavilion_anchor_last_success_timestamp_seconds "))
            .expect("last success sample")
            .parse()
            .expect("a number");
        assert!(last_success > 1_700_000_000.0, "{text}");
        // Found on chain: recorded and counted, but its gas was paid by an earlier run.
        m.anchored("pavilion/audit/0", 2500, &receipt(24_300, true));
        let text = m.render();
        assert!(
            text.contains("pavilion_anchor_gas_used_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pavilion_anchor_lag_checkpoints{origin=\"pavilion/audit/0\"} 0\n"),
            "{text}"
        );
        pavilion_runtime::telemetry::assert_promtool_accepts("anchor metrics", &text);
    }

    #[test]
    fn the_endpoint_serves_metrics_and_health_on_loopback() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let m = AnchorMetrics::new();
        m.failed("rpc");
        serve_metrics(&runtime, listener, None, m).unwrap();
        let get = |path: &str| {
            ureq::get(&format!("{url}{path}"))
                .call()
                .unwrap()
                .into_string()
                .unwrap()
        };
        assert_eq!(get("/healthz"), "ok\n");
        assert!(
            get("/metrics").contains("pavilion_anchor_errors_total{kind=\"rpc\"} 1"),
            "metrics"
        );
    }
}
