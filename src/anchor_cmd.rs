//! `pavilion anchor deploy | run`: the anchor contract, and the loop that posts every signed
//! checkpoint's root on chain, in order per log, one transaction each, and records the
//! receipt on the anchors topic. The chain is the source of truth for what is anchored: a
//! checkpoint found on chain is not sent again (a crash between sending and recording costs
//! a look-up, never a second anchor).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use pavilion_chain::{Address, Anchorer, ChainConfig, RetryPolicy};
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_runtime::clock::epoch_millis;
use pavilion_schemas::{AnchorReceipt, Checkpoint, CheckpointRef, Event, Registry};

use crate::{parse_duration, topology_cmd, ClusterArgs};

/// Anchoring commands.
#[derive(Subcommand)]
pub enum AnchorCommand {
    /// Deploy the AuditAnchor contract (connectors/chain/contracts) from $PAVILION_CHAIN_KEY's
    /// account, the only one that may anchor with it; prints its address.
    Deploy(ChainArgs),
    /// Anchor every checkpoint not anchored yet, in order, then follow new ones until
    /// SIGTERM (or, with --once, stop when caught up).
    Run(RunArgs),
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
    let topology = topology_cmd::load(&args.cluster.file)?;
    let checkpoints = topology_cmd::topic_for(&topology, Checkpoint::FULL_NAME)?.name;
    let anchors = topology_cmd::topic_for(&topology, AnchorReceipt::FULL_NAME)?.name;
    let mut config = ChainConfig::new(&args.chain.rpc_url, chain_key()?);
    config.contract = Some(args.contract);
    config.confirmations = args.confirmations;
    config.from_block = args.from_block;
    let anchorer = Anchorer::connect(&config)?;
    let policy = RetryPolicy {
        timeout: args.give_up_after,
        ..RetryPolicy::default()
    };
    let registry = Registry::builtin();
    let settings = topology_cmd::settings(&args.cluster, "anchor");
    // What is recorded already: the largest anchored size per log.
    let mut recorded: BTreeMap<String, i64> = BTreeMap::new();
    for (_, r) in topology_cmd::read_all::<AnchorReceipt>(&args.cluster, &anchors)? {
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
        for record in batch {
            let Some(value) = record.value else { continue };
            let c: Checkpoint = registry
                .decode(&value)
                .with_context(|| format!("{checkpoints}/{}@{}", record.partition, record.offset))?;
            if recorded.get(&c.origin).is_some_and(|s| *s >= c.tree_size) {
                continue;
            }
            let root: [u8; 32] = c
                .root_hash
                .clone()
                .try_into()
                .map_err(|_| anyhow::anyhow!("{}: a root that is not 32 bytes", c.origin))?;
            let receipt = runtime
                .block_on(anchorer.anchor_with_retry(&c.origin, c.tree_size as u64, root, &policy))
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
            producer.send(&anchors, c.origin.as_bytes(), &registry.encode(&record)?)?;
            producer.flush()?;
            recorded.insert(c.origin.clone(), c.tree_size);
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
