//! `pavilion audit …` (verify the log, prove inclusion and consistency, serve proofs, print
//! the checkpoint verifier keys) and `pavilion subject erase` (crypto-shredding); beside them
//! `audit replay --decisions` (`replay`) and `pavilion anchor …` (`anchor`).

pub mod anchor;
pub mod replay;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use clap::{Args, Subcommand};
use pavilion_audit::log::{verify_consistency, verify_inclusion, LogView};
use pavilion_audit::note::{open, vkey, NoteKey};
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::topology::Topology;
use pavilion_schemas::{AuditEntry, Checkpoint, Event, Registry, SubjectErasure};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cli::{self, ClusterArgs};

/// Audit log commands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Replay the whole log: recompute every leaf and root, verify every checkpoint's
    /// signature and each logged event's digest; report the first divergence (exit 1).
    Verify(VerifyArgs),
    /// Inclusion proofs of every entry of a request against its shard's latest checkpoint.
    Prove(ProveArgs),
    /// A consistency proof between two sizes of one shard's log.
    Consistency(ConsistencyArgs),
    /// Serve proofs over HTTP: GET /v1/audit/prove?request_id=…,
    /// /v1/audit/consistency?origin=…&from=…&to=…, /v1/audit/checkpoints.
    Serve(ServeArgs),
    /// Print the checkpoint verifier keys (C2SP vkeys) of a JWKS.
    Vkeys(VkeysArgs),
    /// Re-derive every policy outcome and decision from the logged inputs and policy
    /// versions with the stages' own code, and compare them byte for byte (exit 1 at the
    /// first difference).
    Replay(replay::ReplayArgs),
}

/// Where the log is and which keys sign its checkpoints.
#[derive(Args, Clone)]
pub struct LogArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub keys: KeysArgs,
    /// Read the log from this topic instead of the topology's (e.g. an archived copy).
    #[arg(long)]
    pub log_topic: Option<String>,
    /// Read checkpoints from this topic instead of the topology's.
    #[arg(long)]
    pub checkpoint_topic: Option<String>,
}

/// The keys checkpoints are signed with.
#[derive(Args, Clone)]
pub struct KeysArgs {
    /// The broker's JWKS (`pavilion keys jwks`, or /.well-known/jwks.json): every Ed25519
    /// key in it may sign checkpoints under the log's name.
    #[arg(long, env = "PAVILION_AUDIT_JWKS")]
    pub jwks: Option<PathBuf>,
    /// A C2SP verifier key (`name+hash+base64`), repeatable.
    #[arg(long)]
    pub vkey: Vec<String>,
}

#[derive(Args)]
pub struct VkeysArgs {
    #[command(flatten)]
    pub file: cli::TopologyFile,
    #[command(flatten)]
    pub keys: KeysArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// Do not re-read the logged events to check their digests (faster; events past their
    /// topic's retention are skipped anyway).
    #[arg(long)]
    pub no_events: bool,
    /// Check every anchor receipt against the chain over this JSON-RPC endpoint (without it,
    /// receipts are checked against the checkpoints only).
    #[arg(long, env = "PAVILION_CHAIN_RPC")]
    pub rpc_url: Option<String>,
}

#[derive(Args)]
pub struct ProveArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// The request whose entries to prove.
    #[arg(long)]
    pub request_id: String,
    /// JSON lines (inclusion proofs, then the checkpoints they rest on) for another verifier.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ConsistencyArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// Shard origin (e.g. `pavilion/audit/0`).
    #[arg(long)]
    pub origin: String,
    /// Older tree size.
    #[arg(long)]
    pub from: u64,
    /// Newer tree size.
    #[arg(long)]
    pub to: u64,
    /// JSON line for another verifier.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// Listen address.
    #[arg(long, env = "PAVILION_AUDIT_ADDR", default_value = "127.0.0.1:9470")]
    pub addr: std::net::SocketAddr,
    #[command(flatten)]
    pub http: crate::cli::HttpServerArgs,
}

pub fn run(command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Prove(args) => {
            let log = Log::read(&args.log)?;
            let lines = log.prove(&args.request_id)?;
            print_lines(&lines, args.json);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Consistency(args) => {
            let log = Log::read(&args.log)?;
            let lines = log.consistency(&args.origin, args.from, args.to)?;
            print_lines(&lines, args.json);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Serve(args) => serve(args),
        AuditCommand::Replay(args) => replay::replay(args),
        AuditCommand::Vkeys(args) => {
            let topology = cli::load(&args.file)?;
            for k in known_keys(&args.keys, &log_name(&topology))? {
                println!("{}", vkey(&k.name, &k.public_key));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The log's name (the audit stage's `origin`): what checkpoint keys are named.
fn log_name(topology: &Topology) -> String {
    topology
        .stages
        .values()
        .find(|s| s.kind == pavilion_audit::KIND.name)
        .and_then(|s| {
            s.config
                .get("origin")
                .and_then(|o| o.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| pavilion_audit::AuditConfig::default().origin)
}

/// Checkpoint keys: each JWKS Ed25519 key under the log's name, and the vkeys given.
fn known_keys(args: &KeysArgs, name: &str) -> Result<Vec<NoteKey>> {
    let mut keys = Vec::new();
    for v in &args.vkey {
        keys.push(NoteKey::from_vkey(v)?);
    }
    if let Some(path) = &args.jwks {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let jwks: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        for k in jwks["keys"].as_array().into_iter().flatten() {
            if k["kty"] != "OKP" || k["crv"] != "Ed25519" {
                continue;
            }
            let x = k["x"].as_str().and_then(|x| B64URL.decode(x).ok());
            let Some(public_key) = x.and_then(|x| <[u8; 32]>::try_from(x).ok()) else {
                bail!("{}: key {} has no 32-byte `x`", path.display(), k["kid"]);
            };
            keys.push(NoteKey {
                name: name.to_owned(),
                public_key,
            });
        }
    }
    if keys.is_empty() {
        bail!("no checkpoint keys: give --jwks FILE (from `pavilion keys jwks`) or --vkey");
    }
    Ok(keys)
}

/// The log as read from Kafka.
struct Log {
    entries: Vec<AuditEntry>,
    checkpoints: Vec<Checkpoint>,
    known: Vec<NoteKey>,
}

pub(crate) fn read<E: Event>(
    args: &LogArgs,
    topic: &str,
) -> Result<Vec<(pavilion_kafka::ReadRecord, E)>> {
    let mut records = TopicReader::new(&cli::settings(&args.cluster, "audit")?, &[topic])?
        .read_to_end(Duration::from_secs(120))
        .with_context(|| format!("reading {topic}"))?;
    records.sort_by_key(|r| (r.partition, r.offset));
    let registry = Registry::builtin();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Some(value) = &r.value else { continue };
        let e = registry.decode::<E>(value).with_context(|| {
            format!(
                "{topic}/{}@{}: not a {}",
                r.partition,
                r.offset,
                E::FULL_NAME
            )
        })?;
        out.push((r, e));
    }
    Ok(out)
}

impl Log {
    fn read(args: &LogArgs) -> Result<Log> {
        let topology = cli::load(&args.cluster.file)?;
        let log_topic = match &args.log_topic {
            Some(t) => t.clone(),
            None => cli::topic_for(&topology, AuditEntry::FULL_NAME)?.name,
        };
        let checkpoint_topic = match &args.checkpoint_topic {
            Some(t) => t.clone(),
            None => cli::topic_for(&topology, Checkpoint::FULL_NAME)?.name,
        };
        let known = known_keys(&args.keys, &log_name(&topology))?;
        Ok(Log {
            entries: read::<AuditEntry>(args, &log_topic)?
                .into_iter()
                .map(|(_, e)| e)
                .collect(),
            checkpoints: read::<Checkpoint>(args, &checkpoint_topic)?
                .into_iter()
                .map(|(_, c)| c)
                .collect(),
            known,
        })
    }

    /// The origin's entries as a tree, and its latest checkpoint whose signature verifies.
    fn origin(&self, origin: &str) -> Result<(LogView, Option<&Checkpoint>)> {
        let mut view = LogView::default();
        for e in self.entries.iter().filter(|e| e.origin == origin) {
            view.push(e.leaf_input());
        }
        let latest = self
            .checkpoints
            .iter()
            .filter(|c| c.origin == origin && c.tree_size as u64 <= view.len())
            .filter(|c| open(&c.note, &self.known).is_ok())
            .max_by_key(|c| c.tree_size);
        if let Some(c) = latest {
            if view.root(c.tree_size as u64)?.as_slice() != c.root_hash {
                bail!(
                    "{origin}: the log does not match its checkpoint at size {}: run `pavilion audit verify`",
                    c.tree_size
                );
            }
        }
        Ok((view, latest))
    }

    fn checkpoint_line(&self, c: &Checkpoint) -> serde_json::Value {
        json!({
            "kind": "checkpoint",
            "origin": c.origin,
            "tree_size": c.tree_size,
            "root_hash": B64.encode(&c.root_hash),
            "note": c.note,
            "vkeys": self.known.iter().map(|k| vkey(&k.name, &k.public_key)).collect::<Vec<_>>(),
        })
    }

    fn prove(&self, request_id: &str) -> Result<Vec<serde_json::Value>> {
        let mine: Vec<&AuditEntry> = self
            .entries
            .iter()
            .filter(|e| e.request_id.as_deref() == Some(request_id))
            .collect();
        if mine.is_empty() {
            bail!("no entry of request `{request_id}` in the log");
        }
        let origins: BTreeSet<&str> = mine.iter().map(|e| e.origin.as_str()).collect();
        let mut lines = Vec::new();
        let mut used = Vec::new();
        for origin in origins {
            let (view, latest) = self.origin(origin)?;
            let Some(c) = latest else {
                bail!("{origin}: no checkpoint yet; entries are checkpointed within the audit stage's punctuation interval");
            };
            let size = c.tree_size as u64;
            let root: [u8; 32] = c.root_hash.clone().try_into().expect("verified root");
            for e in mine.iter().filter(|e| e.origin == origin) {
                let index = e.index as u64;
                if index >= size {
                    eprintln!(
                        "{origin}: entry {index} ({}) is not checkpointed yet",
                        e.event.event_type
                    );
                    continue;
                }
                let proof = view.inclusion(index, size)?;
                // Checked here too: an error in the proof is ours to find first.
                assert!(verify_inclusion(
                    &e.leaf_input(),
                    index,
                    size,
                    &root,
                    &proof
                ));
                lines.push(json!({
                    "kind": "inclusion",
                    "origin": origin,
                    "leaf_index": index,
                    "tree_size": size,
                    "leaf_hash": B64.encode(&e.leaf_hash),
                    "root_hash": B64.encode(root),
                    "proof": proof.iter().map(|p| B64.encode(p)).collect::<Vec<_>>(),
                }));
            }
            used.push(c);
        }
        lines.extend(used.into_iter().map(|c| self.checkpoint_line(c)));
        Ok(lines)
    }

    fn consistency(&self, origin: &str, from: u64, to: u64) -> Result<Vec<serde_json::Value>> {
        let (view, _) = self.origin(origin)?;
        if view.is_empty() {
            bail!("no entries of origin `{origin}`");
        }
        let proof = view.consistency(from, to)?;
        let (old, new) = (view.root(from)?, view.root(to)?);
        assert!(verify_consistency(from, &old, to, &new, &proof));
        let mut lines = vec![json!({
            "kind": "consistency",
            "origin": origin,
            "size1": from,
            "size2": to,
            "root1": B64.encode(old),
            "root2": B64.encode(new),
            "proof": proof.iter().map(|p| B64.encode(p)).collect::<Vec<_>>(),
        })];
        for size in [from, to] {
            if let Some(c) = self
                .checkpoints
                .iter()
                .find(|c| c.origin == origin && c.tree_size as u64 == size)
            {
                lines.push(self.checkpoint_line(c));
            }
        }
        Ok(lines)
    }
}

fn print_lines(lines: &[serde_json::Value], json: bool) {
    for line in lines {
        if json {
            println!("{line}");
            continue;
        }
        match line["kind"].as_str() {
            Some("inclusion") => println!(
                "{} entry {} is in the tree of size {} (root {}): {} proof hashes, verified",
                line["origin"].as_str().unwrap_or_default(),
                line["leaf_index"],
                line["tree_size"],
                line["root_hash"].as_str().unwrap_or_default(),
                line["proof"].as_array().map_or(0, Vec::len)
            ),
            Some("consistency") => println!(
                "{}: the tree of size {} (root {}) is a prefix of the tree of size {} (root {}): {} proof hashes, verified",
                line["origin"].as_str().unwrap_or_default(),
                line["size1"],
                line["root1"].as_str().unwrap_or_default(),
                line["size2"],
                line["root2"].as_str().unwrap_or_default(),
                line["proof"].as_array().map_or(0, Vec::len)
            ),
            _ => println!(
                "signed checkpoint:\n{}",
                line["note"].as_str().unwrap_or_default()
            ),
        }
    }
}

fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let log = Log::read(&args.log)?;
    // The logged events' digests, by position, for the topics still holding them.
    let mut digests: BTreeMap<(String, i32, i64), [u8; 32]> = BTreeMap::new();
    if !args.no_events {
        let topics: BTreeSet<&str> = log.entries.iter().map(|e| e.event.topic.as_str()).collect();
        for topic in topics {
            let records = TopicReader::new(&cli::settings(&args.log.cluster, "audit")?, &[topic])
                .and_then(|r| r.read_to_end(Duration::from_secs(120)));
            match records {
                Ok(records) => {
                    for r in records {
                        if let Some(v) = &r.value {
                            digests
                                .insert((r.topic, r.partition, r.offset), Sha256::digest(v).into());
                        }
                    }
                }
                Err(e) => eprintln!(
                    "warning: cannot re-read {topic} ({e:#}); its digests are not checked"
                ),
            }
        }
    }
    let bar = cli::bar(log.entries.len() as u64, "replaying");
    let mut lookup = |e: &pavilion_schemas::EventRef| {
        digests
            .get(&(e.topic.clone(), e.partition, e.offset))
            .copied()
    };
    let result = pavilion_audit::verify::verify(
        log.entries.iter().cloned(),
        &log.checkpoints,
        &log.known,
        &mut lookup,
        &mut || bar.inc(1),
    );
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            for (origin, r) in &report {
                println!(
                    "{origin}: {} entries, {} checkpoints verified, latest at size {}{}",
                    r.entries,
                    r.checkpoints,
                    r.latest.map_or("-".into(), |(s, _)| s.to_string()),
                    match r.latest {
                        Some((s, _)) if s < r.entries =>
                            format!(" ({} not yet checkpointed)", r.entries - s),
                        _ => String::new(),
                    }
                );
            }
            if let Err(d) = check_anchors(&args, &log) {
                println!("DIVERGENCE at {d}");
                return Ok(ExitCode::from(1));
            }
            println!(
                "ok: {} entries in {} logs; {} event digests re-checked",
                log.entries.len(),
                report.len(),
                if args.no_events {
                    0
                } else {
                    digests.len().min(log.entries.len())
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(d) => {
            println!("DIVERGENCE at {}", d);
            Ok(ExitCode::from(1))
        }
    }
}

/// Anchor receipts: each names a signed checkpoint, in order per log with no gap and no
/// double anchor, and (with --rpc-url) each is an `Anchored` event on chain with the same
/// transaction, size and root. An error names the log and the checkpoint size.
fn check_anchors(args: &VerifyArgs, log: &Log) -> Result<(), String> {
    let topology = cli::load(&args.log.cluster.file).map_err(|e| format!("{e:#}"))?;
    let Ok(topic) = cli::topic_for(&topology, pavilion_schemas::AnchorReceipt::FULL_NAME) else {
        return Ok(());
    };
    let receipts = read::<pavilion_schemas::AnchorReceipt>(&args.log, &topic.name)
        .map_err(|e| format!("{e:#}"))?;
    let mut anchored: BTreeMap<&str, Vec<&pavilion_schemas::AnchorReceipt>> = BTreeMap::new();
    for (_, r) in &receipts {
        anchored
            .entry(r.checkpoint.origin.as_str())
            .or_default()
            .push(r);
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    for (origin, list) in &anchored {
        let fail =
            |size: i64, reason: String| format!("{origin}: checkpoint at size {size}: {reason}");
        let mut previous = 0;
        for r in list {
            let c = &r.checkpoint;
            if c.tree_size <= previous {
                return Err(fail(
                    c.tree_size,
                    format!("anchored out of order or twice (after size {previous})"),
                ));
            }
            previous = c.tree_size;
            if !log.checkpoints.iter().any(|k| {
                k.origin == c.origin && k.tree_size == c.tree_size && k.root_hash == c.root_hash
            }) {
                return Err(fail(
                    c.tree_size,
                    "the anchored root is not the signed checkpoint's".into(),
                ));
            }
        }
        // No gap: every checkpoint up to the last anchored one is anchored.
        for k in log
            .checkpoints
            .iter()
            .filter(|k| k.origin == *origin && k.tree_size <= previous)
        {
            if !list.iter().any(|r| r.checkpoint.tree_size == k.tree_size) {
                return Err(fail(
                    k.tree_size,
                    "not anchored, though a later checkpoint is".into(),
                ));
            }
        }
        let Some(rpc) = &args.rpc_url else { continue };
        let contract = pavilion_chain::Address::try_from(list[0].contract_address.as_slice())
            .map_err(|_| {
                fail(
                    list[0].checkpoint.tree_size,
                    "receipt names no 20-byte contract".into(),
                )
            })?;
        let on_chain = runtime
            .block_on(async {
                pavilion_chain::Anchorer::reader(rpc, contract)?
                    .anchored(Some(origin))
                    .await
            })
            .map_err(|e| format!("{origin}: reading anchors from {rpc}: {e}"))?;
        let sizes: Vec<u64> = on_chain.iter().map(|a| a.tree_size).collect();
        if sizes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "{origin}: anchored on chain out of order or twice: sizes {sizes:?}"
            ));
        }
        for r in list {
            let found = on_chain.iter().any(|a| {
                a.tree_size as i64 == r.checkpoint.tree_size
                    && a.root.as_slice() == r.checkpoint.root_hash
                    && a.tx_hash.as_slice() == r.tx_hash
            });
            if !found {
                return Err(fail(
                    r.checkpoint.tree_size,
                    format!("no such anchor on chain ({rpc}, contract {contract})"),
                ));
            }
        }
    }
    let total: usize = anchored.values().map(Vec::len).sum();
    if total > 0 {
        println!(
            "anchors: {total} checkpoints anchored in order, no gap{}",
            if args.rpc_url.is_some() {
                ", each found on chain"
            } else {
                " (chain not checked: no --rpc-url)"
            }
        );
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    use axum::extract::Query;
    use axum::http::StatusCode;
    use axum::routing::get;
    let tls = args.http.tls(args.addr, "--addr")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("binding {}", args.addr))?;
        eprintln!(
            "pavilion: serving audit proofs on {}://{}",
            args.http.scheme(),
            args.addr
        );
        // Each answer re-reads the log: what it proves is what the log holds now.
        let answer = |result: Result<Vec<serde_json::Value>>| match result {
            Ok(lines) => (StatusCode::OK, serde_json::Value::from(lines).to_string()),
            Err(e) => (
                StatusCode::NOT_FOUND,
                json!({ "error": format!("{e:#}") }).to_string(),
            ),
        };
        let log = args.log.clone();
        let prove = move |Query(q): Query<BTreeMap<String, String>>| {
            let log = log.clone();
            async move {
                answer(
                    tokio::task::spawn_blocking(move || {
                        let id = q.get("request_id").context("request_id is required")?;
                        Log::read(&log)?.prove(id)
                    })
                    .await
                    .expect("proof task"),
                )
            }
        };
        let log = args.log.clone();
        let consistency = move |Query(q): Query<BTreeMap<String, String>>| {
            let log = log.clone();
            async move {
                answer(
                    tokio::task::spawn_blocking(move || {
                        let num = |k: &str| -> Result<u64> {
                            q.get(k)
                                .with_context(|| format!("{k} is required"))?
                                .parse()
                                .with_context(|| format!("{k} is not a size"))
                        };
                        let origin = q.get("origin").context("origin is required")?;
                        Log::read(&log)?.consistency(origin, num("from")?, num("to")?)
                    })
                    .await
                    .expect("proof task"),
                )
            }
        };
        let log = args.log.clone();
        let checkpoints = move || {
            let log = log.clone();
            async move {
                answer(
                    tokio::task::spawn_blocking(move || {
                        let log = Log::read(&log)?;
                        let origins: BTreeSet<&str> =
                            log.checkpoints.iter().map(|c| c.origin.as_str()).collect();
                        Ok(origins
                            .into_iter()
                            .filter_map(|o| {
                                log.checkpoints
                                    .iter()
                                    .filter(|c| c.origin == o)
                                    .max_by_key(|c| c.tree_size)
                                    .map(|c| log.checkpoint_line(c))
                            })
                            .collect())
                    })
                    .await
                    .expect("proof task"),
                )
            }
        };
        let app = axum::Router::new()
            .route("/v1/audit/prove", get(prove))
            .route("/v1/audit/consistency", get(consistency))
            .route("/v1/audit/checkpoints", get(checkpoints));
        pavilion_http::serve(listener, tls, app, std::future::pending()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `pavilion subject …`
#[derive(Subcommand)]
pub enum SubjectCommand {
    /// Erase a subject from the audit log (GDPR Art. 17): delete its audit key, so the
    /// subject-linked fields of its entries can never be decrypted, and log the erasure.
    /// The log itself is untouched and still verifies.
    Erase(EraseArgs),
}

#[derive(Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The subject's OPRF token at `--provider` (base64 or base64url), as the relying party's
    /// client computed it.
    #[arg(required_unless_present = "key_id")]
    pub token: Option<String>,
    /// Provider whose OPRF key made the token.
    #[arg(long, requires = "token")]
    pub provider: Option<String>,
    /// Or the subject's audit key id directly (as in the log's entries).
    #[arg(long, conflicts_with = "token")]
    pub key_id: Option<String>,
    /// The subject key store (passphrase from $PAVILION_SUBJECT_KEYS_PASSPHRASE).
    #[arg(long, env = "PAVILION_SUBJECT_KEYS")]
    pub subject_keys: PathBuf,
    /// Who asks (operator, ticket): recorded in the audit log.
    #[arg(long, default_value = "operator")]
    pub requested_by: String,
}

/// Opens the subject key store at `dir` with $PAVILION_SUBJECT_KEYS_PASSPHRASE.
pub fn subject_keys(dir: &std::path::Path) -> Result<pavilion_keys::subjects::SubjectKeyStore> {
    let passphrase = std::env::var("PAVILION_SUBJECT_KEYS_PASSPHRASE")
        .context("set PAVILION_SUBJECT_KEYS_PASSPHRASE: it seals the subject keys at rest")?;
    if passphrase.is_empty() {
        bail!("PAVILION_SUBJECT_KEYS_PASSPHRASE is empty");
    }
    Ok(pavilion_keys::subjects::SubjectKeyStore::new(
        dir,
        passphrase.as_bytes(),
    ))
}

pub fn subject(command: SubjectCommand) -> Result<ExitCode> {
    let SubjectCommand::Erase(args) = command;
    let key_id = match (&args.key_id, &args.token, &args.provider) {
        (Some(id), _, _) => id.clone(),
        (None, Some(token), Some(provider)) => {
            let bytes = B64
                .decode(token.trim())
                .or_else(|_| B64URL.decode(token.trim().trim_end_matches('=')))
                .context("the token is neither base64 nor base64url")?;
            pavilion_audit::subject::key_id(provider, &bytes)
        }
        _ => bail!("give the subject's TOKEN with --provider, or --key-id"),
    };
    let store = subject_keys(&args.subject_keys)?;
    let erased = store.erase(&key_id)?;
    let topology = cli::load(&args.cluster.file)?;
    let topic = cli::topic_for(&topology, SubjectErasure::FULL_NAME)?.name;
    let producer = PlainProducer::new(&cli::settings(&args.cluster, "cli")?)?;
    let event = SubjectErasure {
        key_id: key_id.clone(),
        requested_by: args.requested_by.clone(),
        erased_at: epoch_millis(std::time::SystemTime::now()),
    };
    producer.send(
        &topic,
        key_id.as_bytes(),
        &Registry::builtin().encode(&event)?,
    )?;
    producer.flush()?;
    println!(
        "subject key {key_id}: {}; erasure recorded on {topic}",
        match erased {
            pavilion_keys::subjects::Erased::Deleted => "deleted",
            pavilion_keys::subjects::Erased::NeverCreated =>
                "had never been used (it never will be)",
            pavilion_keys::subjects::Erased::Already => "was already erased",
        }
    );
    Ok(ExitCode::SUCCESS)
}
