//! Anchors the audit log's signed checkpoints on an Ethereum-compatible chain, and reads them
//! back for auditors.
//!
//! Each checkpoint `(origin, tree size, root)` becomes one call to the `AuditAnchor` contract
//! (`contracts/AuditAnchor.sol`), which stores nothing and emits one event:
//!
//! ```text
//! event Anchored(bytes32 indexed originHash, uint64 treeSize, bytes32 root);
//! ```
//!
//! where `originHash = keccak256(origin's UTF-8 bytes)` ([`origin_hash`]). The event log is the
//! record: an auditor needs only JSON-RPC (`eth_getLogs`, see [`Anchorer::anchored`]) to list
//! every anchored root, and an anchor costs little more than a bare transaction.
//!
//! # Never anchoring twice
//!
//! The contract does not reject duplicates (that would need storage), so the client makes
//! anchoring idempotent instead:
//!
//! * before sending, [`Anchorer::anchor`] looks on chain for an `Anchored` event with the same
//!   `(originHash, treeSize, root)` from this contract and, if there is one, returns its
//!   receipt: a retry after a crash between sending and recording sends nothing;
//! * the nonce of a new transaction is read *before* that look-up, so an earlier transaction
//!   mined in between makes the new one fail with "nonce too low" instead of landing twice;
//! * while the node holds a transaction of this account that is not yet mined (say, one sent
//!   just before a crash), no new one is signed until it is mined or dropped;
//! * a transaction already signed for this checkpoint is re-broadcast byte for byte (same
//!   nonce, same hash) rather than signed anew.
//!
//! What this cannot cover: a transaction the node forgot but that is still travelling in other
//! nodes' mempools. A new transaction then reuses its nonce, so at most one of the two is mined.
//! Load-balanced RPC endpoints whose nodes disagree about the latest block weaken the look-up;
//! point `rpc_url` at one node.
//!
//! # Retries
//!
//! [`Anchorer::anchor`] is one attempt; [`Anchorer::anchor_with_retry`] repeats it with
//! exponential backoff while the errors are transient ([`ChainError::is_transient`]: node down,
//! connection refused, rate limits, no receipt yet) until a caller-given timeout.
//!
//! [`deploy`] is a one-off administrative step and is not idempotent: retrying it after an
//! unclear failure may deploy a second contract (harmless, but check which one to use).

#![warn(missing_docs)]

pub mod dev;

use std::fmt;
use std::time::{Duration, Instant};

use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{
    EthereumWallet, NetworkTransactionBuilder, ReceiptResponse, TransactionBuilder,
};
use alloy::primitives::{keccak256, Bytes, B256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::{Filter, Log, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolError, SolEvent};
use alloy::transports::{RpcError, TransportError, TransportErrorKind};
use tokio::sync::{Mutex, OnceCell};

pub use alloy::primitives::Address;

// The Rust bindings come from the same source file that `contracts/build.sh` compiles, so the
// ABI used here cannot drift from the deployed bytecode.
alloy::sol!("contracts/AuditAnchor.sol");

use AuditAnchor::{anchorCall, Anchored, NotOwner};

/// The compiled contract (`contracts/AuditAnchor.json`: ABI and creation bytecode), as
/// written by `contracts/build.sh`, which can also check that it is reproducible.
pub const ARTIFACT_JSON: &str = include_str!("../contracts/AuditAnchor.json");

/// The hash the contract receives and indexes for an origin: `keccak256(origin.as_bytes())`.
pub fn origin_hash(origin: &str) -> [u8; 32] {
    keccak256(origin.as_bytes()).0
}

/// Where and how to anchor. Build with [`ChainConfig::new`], then set what differs from the
/// defaults.
#[derive(Clone)]
#[non_exhaustive]
pub struct ChainConfig {
    /// JSON-RPC endpoint over HTTP(S), e.g. `http://127.0.0.1:8545`.
    pub rpc_url: String,
    /// Hex secp256k1 private key of the sending account (with or without `0x`); for anchoring
    /// it must be the account that deployed the contract.
    pub private_key: String,
    /// The `AuditAnchor` contract; required by [`Anchorer::connect`], ignored by [`deploy`].
    pub contract: Option<Address>,
    /// Blocks to wait after the one that includes a transaction before it counts as done.
    pub confirmations: u64,
    /// First block searched for `Anchored` events: the deployment block ([`Deployment`]).
    /// 0 is right for a dev chain; on a long chain it saves scanning millions of empty blocks.
    pub from_block: u64,
    /// Most blocks asked for in one `eth_getLogs` call; public endpoints often refuse more
    /// than 10,000.
    pub log_block_range: u64,
    /// How often to poll for receipts, new blocks and pending transactions.
    pub poll_interval: Duration,
    /// Longest wait for one transaction's receipt (and its confirmations) in one attempt.
    pub receipt_timeout: Duration,
}

impl ChainConfig {
    /// A config with defaults: no contract yet, 0 confirmations, logs from block 0 in ranges
    /// of 10,000 blocks, polling every second, receipts awaited up to 5 minutes.
    pub fn new(rpc_url: impl Into<String>, private_key: impl Into<String>) -> Self {
        ChainConfig {
            rpc_url: rpc_url.into(),
            private_key: private_key.into(),
            contract: None,
            confirmations: 0,
            from_block: 0,
            log_block_range: 10_000,
            poll_interval: Duration::from_secs(1),
            receipt_timeout: Duration::from_secs(300),
        }
    }
}

// By hand so that the private key never reaches a log line.
impl fmt::Debug for ChainConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainConfig")
            .field("rpc_url", &self.rpc_url)
            .field("private_key", &"<redacted>")
            .field("contract", &self.contract)
            .field("confirmations", &self.confirmations)
            .field("from_block", &self.from_block)
            .field("log_block_range", &self.log_block_range)
            .field("poll_interval", &self.poll_interval)
            .field("receipt_timeout", &self.receipt_timeout)
            .finish()
    }
}

/// A deployed `AuditAnchor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// The contract, for [`ChainConfig::contract`].
    pub address: Address,
    /// Block of the deployment: a good [`ChainConfig::from_block`].
    pub block_number: u64,
    /// The deploying transaction.
    pub tx_hash: [u8; 32],
}

/// Proof that a checkpoint is anchored: where its `Anchored` event is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorReceipt {
    /// The chain's EIP-155 id (1 for Ethereum mainnet, 31337 for anvil).
    pub chain_id: u64,
    /// The `AuditAnchor` contract that emitted the event.
    pub contract_address: Address,
    /// The transaction that anchored the checkpoint.
    pub tx_hash: [u8; 32],
    /// The block that includes that transaction.
    pub block_number: u64,
    /// Gas the transaction used (about 24,300 for an anchor).
    pub gas_used: u64,
    /// True when the event was already on chain and nothing was sent this time.
    pub already_anchored: bool,
}

/// One `Anchored` event as an auditor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChainAnchor {
    /// `keccak256(origin)`, see [`origin_hash`].
    pub origin_hash: [u8; 32],
    /// The checkpoint's tree size.
    pub tree_size: u64,
    /// The checkpoint's root hash.
    pub root: [u8; 32],
    /// The transaction that emitted the event.
    pub tx_hash: [u8; 32],
    /// The block that includes it.
    pub block_number: u64,
    /// Position of the event in its block; with `block_number` it gives the chain order.
    pub log_index: u64,
}

/// How [`Anchorer::anchor_with_retry`] retries transient errors.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Give up (with [`ChainError::RetriesExhausted`]) once this much time has passed.
    pub timeout: Duration,
    /// Wait before the first retry; doubled after each failed attempt.
    pub initial_backoff: Duration,
    /// Cap on the wait between attempts, so a node that comes back is noticed within it.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_secs(300),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
        }
    }
}

/// Errors of this crate. Those that reached a node name it (`url`, the configured
/// `rpc_url`) and what was being done (`what`: the checkpoint being anchored, the
/// deployment, or the listing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // the fields are the same few throughout, documented above
pub enum ChainError {
    /// `rpc_url` is not a URL.
    #[error("invalid RPC URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// `private_key` is not a secp256k1 key; the key itself is never part of the message.
    #[error("invalid private key (expected 32 bytes of hex): {reason}")]
    InvalidKey { reason: String },
    /// [`Anchorer::connect`] without [`ChainConfig::contract`].
    #[error("no AuditAnchor contract address configured (deploy one first)")]
    NoContract,
    /// The configured contract address holds no code on this chain.
    #[error("{url}: no contract code at {contract} (wrong address or wrong chain?)")]
    NoCode { url: String, contract: Address },
    /// A JSON-RPC call failed: the node is unreachable (transient) or answered an error.
    #[error("{url}: {what}: {op} failed: {source}")]
    Rpc {
        url: String,
        what: String,
        op: &'static str,
        #[source]
        source: TransportError,
    },
    /// The key is not the contract's owner (its deployer), so the contract would revert.
    #[error("{url}: {what}: account {from} is not the owner of contract {contract}")]
    NotOwner {
        url: String,
        what: String,
        from: Address,
        contract: Address,
    },
    /// The transaction could not be built or signed.
    #[error("{url}: {what}: cannot build or sign the transaction: {reason}")]
    Sign {
        url: String,
        what: String,
        reason: String,
    },
    /// The transaction was mined but failed (receipt status 0).
    #[error(
        "{url}: {what}: transaction {tx_hash} failed on chain \
         (block {block_number}, gas used {gas_used})"
    )]
    Reverted {
        url: String,
        what: String,
        tx_hash: B256,
        block_number: u64,
        gas_used: u64,
    },
    /// No receipt (or not enough confirmations) within `receipt_timeout`; the transaction
    /// may still be mined, and the next attempt picks it up.
    #[error("{url}: {what}: no receipt for transaction {tx_hash} after {waited:?}")]
    ReceiptTimeout {
        url: String,
        what: String,
        tx_hash: B256,
        waited: Duration,
    },
    /// Transactions of the account sat in the node's mempool for `receipt_timeout` (say,
    /// one from before a restart with too low a fee); nothing new is sent while they might
    /// still anchor the checkpoint.
    #[error(
        "{url}: {what}: still waiting after {waited:?} for earlier pending transactions of \
         {from} to be mined"
    )]
    PendingTimeout {
        url: String,
        what: String,
        from: Address,
        waited: Duration,
    },
    /// The transaction's block was replaced while waiting for confirmations.
    #[error(
        "{url}: {what}: transaction {tx_hash} left the canonical chain while waiting for \
         confirmations"
    )]
    Reorged {
        url: String,
        what: String,
        tx_hash: B256,
    },
    /// The node answered something that makes no sense (a log without a block number…).
    #[error("{url}: {what}: unexpected answer: {reason}")]
    Unexpected {
        url: String,
        what: String,
        reason: String,
    },
    /// [`Anchorer::anchor_with_retry`] ran out of time; `last` is the last attempt's error.
    #[error("{url}: {what}: gave up after {attempts} attempts in {elapsed:?}; last error: {last}")]
    RetriesExhausted {
        url: String,
        what: String,
        attempts: u32,
        elapsed: Duration,
        #[source]
        last: Box<ChainError>,
    },
}

impl ChainError {
    /// True when trying again later may succeed: the node is unreachable or overloaded, a
    /// receipt is late, a transaction was reorged out or its nonce was taken. False for
    /// configuration errors, reverts and answers that will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            ChainError::Rpc { source, .. } => is_transient_rpc(source),
            ChainError::ReceiptTimeout { .. }
            | ChainError::PendingTimeout { .. }
            | ChainError::Reorged { .. } => true,
            _ => false,
        }
    }
}

fn is_transient_rpc(err: &TransportError) -> bool {
    match err {
        RpcError::Transport(kind) => match kind {
            // Connection refused/reset, DNS and timeouts all arrive as Custom (reqwest).
            TransportErrorKind::Custom(_)
            | TransportErrorKind::BackendGone
            | TransportErrorKind::MissingBatchResponse(_)
            | TransportErrorKind::HttpErrorWithRetryAfter { .. } => true,
            TransportErrorKind::HttpError(http) => {
                http.status == 408 || http.status == 429 || http.status >= 500
            }
            _ => false,
        },
        RpcError::ErrorResp(payload) => {
            // A nonce taken since it was read, or still held by a transaction in the
            // mempool: the next attempt's look-up and nonce check sort it out.
            let msg = payload.message.to_lowercase();
            payload.is_retry_err()
                || msg.contains("nonce too low")
                || msg.contains("replacement transaction underpriced")
        }
        // A node still syncing can answer null for data it will have shortly.
        RpcError::NullResp => true,
        _ => false,
    }
}

/// The checkpoint as named in errors and logs.
fn describe(origin: &str, tree_size: u64, root: &B256) -> String {
    format!("anchoring checkpoint {origin:?} size {tree_size} root {root}")
}

/// The parts shared by deploying and anchoring: an HTTP provider and a signing account.
struct Client {
    provider: RootProvider,
    wallet: EthereumWallet,
    from: Address,
    url: String,
    poll_interval: Duration,
    receipt_timeout: Duration,
    confirmations: u64,
}

/// (originHash, treeSize, root) of a checkpoint.
type CheckpointKey = (B256, u64, B256);

/// A signed transaction and what is needed to re-broadcast it unchanged.
struct SentTx {
    nonce: u64,
    hash: B256,
    raw: Bytes,
}

impl Client {
    fn new(config: &ChainConfig) -> Result<Self, ChainError> {
        let url = config
            .rpc_url
            .parse::<alloy::transports::http::reqwest::Url>()
            .map_err(|e| ChainError::InvalidUrl {
                url: config.rpc_url.clone(),
                reason: e.to_string(),
            })?;
        let signer: PrivateKeySigner = config.private_key.trim().parse().map_err(
            |e: alloy::signers::local::LocalSignerError| ChainError::InvalidKey {
                reason: e.to_string(),
            },
        )?;
        let from = signer.address();
        Ok(Client {
            provider: RootProvider::new_http(url),
            wallet: EthereumWallet::from(signer),
            from,
            url: config.rpc_url.clone(),
            poll_interval: config.poll_interval,
            receipt_timeout: config.receipt_timeout,
            confirmations: config.confirmations,
        })
    }

    fn rpc_err(&self, what: &str, op: &'static str) -> impl FnOnce(TransportError) -> ChainError {
        let (url, what) = (self.url.clone(), what.to_string());
        move |source| ChainError::Rpc {
            url,
            what,
            op,
            source,
        }
    }

    async fn nonces(&self, what: &str) -> Result<(u64, u64), ChainError> {
        let latest = self
            .provider
            .get_transaction_count(self.from)
            .latest()
            .await
            .map_err(self.rpc_err(what, "eth_getTransactionCount(latest)"))?;
        let pending = self
            .provider
            .get_transaction_count(self.from)
            .pending()
            .await
            .map_err(self.rpc_err(what, "eth_getTransactionCount(pending)"))?;
        Ok((latest, pending))
    }

    /// Fills gas and fees into `tx`, signs it with `nonce`, and returns it unsent.
    async fn sign(
        &self,
        what: &str,
        tx: TransactionRequest,
        nonce: u64,
        chain_id: u64,
        contract: Option<Address>,
    ) -> Result<SentTx, ChainError> {
        let tx = tx
            .with_from(self.from)
            .with_nonce(nonce)
            .with_chain_id(chain_id);
        let gas = match self.provider.estimate_gas(tx.clone()).await {
            Ok(gas) => gas,
            Err(RpcError::ErrorResp(payload))
                if payload
                    .as_revert_data()
                    .is_some_and(|data| data.starts_with(&NotOwner::SELECTOR)) =>
            {
                return Err(ChainError::NotOwner {
                    url: self.url.clone(),
                    what: what.to_string(),
                    from: self.from,
                    contract: contract.unwrap_or_default(),
                });
            }
            Err(e) => return Err(self.rpc_err(what, "eth_estimateGas")(e)),
        };
        let fees = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(self.rpc_err(what, "fee estimation"))?;
        // Headroom over the estimate: the estimate is exact for this contract, but a node may
        // price calldata differently than the one that estimated.
        let tx = tx
            .with_gas_limit(gas + gas / 5)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let envelope: TxEnvelope = tx.build(&self.wallet).await.map_err(|e| ChainError::Sign {
            url: self.url.clone(),
            what: what.to_string(),
            reason: e.to_string(),
        })?;
        Ok(SentTx {
            nonce,
            hash: *envelope.tx_hash(),
            raw: envelope.encoded_2718().into(),
        })
    }

    /// Hands `tx` to the node; a node that already has it is fine.
    async fn broadcast(&self, what: &str, tx: &SentTx) -> Result<(), ChainError> {
        match self.provider.send_raw_transaction(&tx.raw).await {
            Ok(_) => Ok(()),
            Err(RpcError::ErrorResp(payload))
                if {
                    let msg = payload.message.to_lowercase();
                    msg.contains("already known")
                        || msg.contains("already imported")
                        || msg.contains("known transaction")
                } =>
            {
                Ok(())
            }
            Err(e) => Err(self.rpc_err(what, "eth_sendRawTransaction")(e)),
        }
    }

    /// Polls for the receipt of `hash` until it arrives or `receipt_timeout` passes, then
    /// checks its status and waits for the confirmations.
    async fn await_receipt(
        &self,
        what: &str,
        hash: B256,
    ) -> Result<TransactionReceipt, ChainError> {
        let started = Instant::now();
        let receipt = loop {
            if let Some(receipt) = self.receipt(what, hash).await? {
                break receipt;
            }
            if started.elapsed() >= self.receipt_timeout {
                return Err(ChainError::ReceiptTimeout {
                    url: self.url.clone(),
                    what: what.to_string(),
                    tx_hash: hash,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(self.poll_interval).await;
        };
        let block_number = receipt.block_number().unwrap_or_default();
        if !receipt.status() {
            return Err(ChainError::Reverted {
                url: self.url.clone(),
                what: what.to_string(),
                tx_hash: hash,
                block_number,
                gas_used: receipt.gas_used(),
            });
        }
        self.confirm(what, receipt, started).await
    }

    async fn receipt(
        &self,
        what: &str,
        hash: B256,
    ) -> Result<Option<TransactionReceipt>, ChainError> {
        self.provider
            .get_transaction_receipt(hash)
            .await
            .map_err(self.rpc_err(what, "eth_getTransactionReceipt"))
    }

    /// Waits until `confirmations` blocks follow the receipt's block, then makes sure the
    /// receipt is still there, in the same block.
    async fn confirm(
        &self,
        what: &str,
        receipt: TransactionReceipt,
        started: Instant,
    ) -> Result<TransactionReceipt, ChainError> {
        if self.confirmations == 0 {
            return Ok(receipt);
        }
        let hash = receipt.transaction_hash;
        let target = receipt.block_number().unwrap_or_default() + self.confirmations;
        loop {
            let head = self
                .provider
                .get_block_number()
                .await
                .map_err(self.rpc_err(what, "eth_blockNumber"))?;
            if head >= target {
                break;
            }
            if started.elapsed() >= self.receipt_timeout {
                return Err(ChainError::ReceiptTimeout {
                    url: self.url.clone(),
                    what: format!("{what} (waiting for block {target})"),
                    tx_hash: hash,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(self.poll_interval).await;
        }
        match self.receipt(what, hash).await? {
            Some(again) if again.block_hash == receipt.block_hash => Ok(again),
            _ => Err(ChainError::Reorged {
                url: self.url.clone(),
                what: what.to_string(),
                tx_hash: hash,
            }),
        }
    }

    async fn chain_id(&self, what: &str) -> Result<u64, ChainError> {
        self.provider
            .get_chain_id()
            .await
            .map_err(self.rpc_err(what, "eth_chainId"))
    }
}

/// The contract's creation bytecode, from the embedded artifact.
fn creation_bytecode() -> Result<Bytes, String> {
    let artifact: serde_json::Value =
        serde_json::from_str(ARTIFACT_JSON).map_err(|e| format!("artifact is not JSON: {e}"))?;
    let hex = artifact["bytecode"]
        .as_str()
        .ok_or("artifact has no \"bytecode\" string")?;
    hex.parse::<Bytes>()
        .map_err(|e| format!("artifact bytecode is not hex: {e}"))
}

/// Deploys a new `AuditAnchor` owned by the configured account and waits for it (and its
/// confirmations). `config.contract` is ignored.
pub async fn deploy(config: &ChainConfig) -> Result<Deployment, ChainError> {
    let what = "deploying AuditAnchor";
    let client = Client::new(config)?;
    let code = creation_bytecode().map_err(|reason| ChainError::Sign {
        url: client.url.clone(),
        what: what.to_string(),
        reason,
    })?;
    let chain_id = client.chain_id(what).await?;
    let (nonce, _) = client.nonces(what).await?;
    let tx = client
        .sign(
            what,
            TransactionRequest::default().with_deploy_code(code),
            nonce,
            chain_id,
            None,
        )
        .await?;
    client.broadcast(what, &tx).await?;
    let receipt = client.await_receipt(what, tx.hash).await?;
    let address = receipt
        .contract_address()
        .ok_or_else(|| ChainError::Unexpected {
            url: client.url.clone(),
            what: what.to_string(),
            reason: format!("receipt of {} has no contract address", tx.hash),
        })?;
    let block_number = receipt.block_number().unwrap_or_default();
    tracing::info!(url = %client.url, %address, block_number, "AuditAnchor deployed");
    Ok(Deployment {
        address,
        block_number,
        tx_hash: tx.hash.0,
    })
}

/// A connection to one `AuditAnchor` contract through one account.
///
/// Anchors are sent one at a time (an internal lock spans each attempt), which keeps the
/// account's nonces in order; share it behind an `Arc` if several tasks anchor.
pub struct Anchorer {
    client: Client,
    contract: Address,
    from_block: u64,
    log_block_range: u64,
    /// Chain id, fetched (with a check that the contract exists) on first use, so that
    /// connecting needs no reachable node.
    chain_id: OnceCell<u64>,
    /// The transaction signed for the checkpoint being anchored, until it has a receipt.
    in_flight: Mutex<Option<(CheckpointKey, SentTx)>>,
}

impl Anchorer {
    /// Parses the configuration; does no I/O (a node that is down now is only an error when
    /// something is anchored or read).
    pub fn connect(config: &ChainConfig) -> Result<Self, ChainError> {
        let contract = config.contract.ok_or(ChainError::NoContract)?;
        Ok(Anchorer {
            client: Client::new(config)?,
            contract,
            from_block: config.from_block,
            log_block_range: config.log_block_range.max(1),
            chain_id: OnceCell::new(),
            in_flight: Mutex::new(None),
        })
    }

    /// A client for auditors that only reads anchors ([`Anchorer::anchored`]). It never
    /// sends a transaction, so the key it is built with (the scalar 1) is never used.
    pub fn reader(rpc_url: &str, contract: Address) -> Result<Self, ChainError> {
        let mut config = ChainConfig::new(rpc_url, format!("{:064x}", 1));
        config.contract = Some(contract);
        Self::connect(&config)
    }

    /// The contract anchored to.
    pub fn contract(&self) -> Address {
        self.contract
    }

    /// The sending account (the key's address).
    pub fn account(&self) -> Address {
        self.client.from
    }

    async fn chain_id(&self, what: &str) -> Result<u64, ChainError> {
        self.chain_id
            .get_or_try_init(|| async {
                let chain_id = self.client.chain_id(what).await?;
                let code = self
                    .client
                    .provider
                    .get_code_at(self.contract)
                    .await
                    .map_err(self.client.rpc_err(what, "eth_getCode"))?;
                if code.is_empty() {
                    return Err(ChainError::NoCode {
                        url: self.client.url.clone(),
                        contract: self.contract,
                    });
                }
                Ok(chain_id)
            })
            .await
            .copied()
    }

    /// Anchors checkpoint `(origin, tree_size, root)` unless it already is: one attempt, see
    /// the crate docs for how it avoids anchoring twice. Waits for the receipt and
    /// `confirmations` further blocks (up to `receipt_timeout`); a failed transaction is
    /// [`ChainError::Reverted`].
    pub async fn anchor(
        &self,
        origin: &str,
        tree_size: u64,
        root: [u8; 32],
    ) -> Result<AnchorReceipt, ChainError> {
        let event = Anchored {
            originHash: keccak256(origin.as_bytes()),
            treeSize: tree_size,
            root: B256::from(root),
        };
        let what = describe(origin, tree_size, &event.root);
        let chain_id = self.chain_id(&what).await?;
        let mut in_flight = self.in_flight.lock().await;
        // A transaction of an earlier checkpoint that was given up on is left to the node: it
        // still shows up in the pending nonce below, and is waited for like any other.
        let key = (event.originHash, event.treeSize, event.root);
        if in_flight.as_ref().is_some_and(|(k, _)| *k != key) {
            *in_flight = None;
        }
        let started = Instant::now();
        loop {
            if let Some((_, tx)) = in_flight.as_ref() {
                if let Some(receipt) = self.client.receipt(&what, tx.hash).await? {
                    let receipt = self.finish(&what, receipt, started).await;
                    *in_flight = None;
                    return receipt.map(|r| self.receipt_of(chain_id, &r, false));
                }
            }
            // Nonces before the look-up: a transaction mined after this read cannot be
            // joined by a second one with the nonce read here.
            let (latest, pending) = self.client.nonces(&what).await?;
            if let Some(found) = self.find(&what, &event).await? {
                *in_flight = None;
                let receipt = self
                    .client
                    .receipt(&what, B256::from(found.tx_hash))
                    .await?;
                let Some(receipt) = receipt else {
                    return Err(ChainError::Unexpected {
                        url: self.client.url.clone(),
                        what,
                        reason: format!(
                            "event found in transaction 0x{} but no receipt",
                            alloy::hex::encode(found.tx_hash)
                        ),
                    });
                };
                let receipt = self.client.confirm(&what, receipt, started).await?;
                tracing::info!(url = %self.client.url, %what, block = found.block_number,
                    "checkpoint already anchored, nothing sent");
                return Ok(self.receipt_of(chain_id, &receipt, true));
            }
            if pending > latest {
                // Our own transactions wait in the mempool: ours for this checkpoint (then
                // wait for its receipt), or unknown ones, say from before a restart, that may
                // anchor this very checkpoint (then wait until they are mined and look again).
                if let Some((_, tx)) = in_flight.as_ref().filter(|(_, tx)| tx.nonce >= latest) {
                    let receipt = self.client.await_receipt(&what, tx.hash).await;
                    // A timeout keeps the transaction for the next attempt; any answer ends it.
                    if !matches!(receipt, Err(ChainError::ReceiptTimeout { .. })) {
                        *in_flight = None;
                    }
                    return receipt.map(|r| self.receipt_of(chain_id, &r, false));
                }
                if started.elapsed() >= self.client.receipt_timeout {
                    return Err(ChainError::PendingTimeout {
                        url: self.client.url.clone(),
                        what,
                        from: self.client.from,
                        waited: started.elapsed(),
                    });
                }
                tracing::debug!(url = %self.client.url, %what, latest, pending,
                    "waiting for pending transactions of the account before anchoring");
                tokio::time::sleep(self.client.poll_interval).await;
                continue;
            }
            // Nothing pending. Re-use the signed transaction if its nonce is still free (a
            // node that restarted may have forgotten it); otherwise sign anew with the free
            // nonce, which any lost copy of an older transaction would need as well.
            let reuse = in_flight.as_ref().is_some_and(|(_, tx)| tx.nonce == latest);
            if !reuse {
                let call = anchorCall {
                    originHash: event.originHash,
                    treeSize: event.treeSize,
                    root: event.root,
                };
                let request = TransactionRequest::default()
                    .with_to(self.contract)
                    .with_input(call.abi_encode());
                let tx = self
                    .client
                    .sign(&what, request, latest, chain_id, Some(self.contract))
                    .await?;
                *in_flight = Some((key, tx));
            }
            let Some((_, tx)) = in_flight.as_ref() else {
                unreachable!("in_flight was set above");
            };
            tracing::info!(url = %self.client.url, %what, tx = %tx.hash, nonce = tx.nonce,
                resend = reuse, "sending anchor transaction");
            self.client.broadcast(&what, tx).await?;
            let receipt = self.client.await_receipt(&what, tx.hash).await;
            // A timeout keeps the transaction for the next attempt; any answer ends it.
            if !matches!(receipt, Err(ChainError::ReceiptTimeout { .. })) {
                *in_flight = None;
            }
            let receipt = receipt?;
            tracing::info!(url = %self.client.url, %what, tx = %receipt.transaction_hash,
                block = receipt.block_number().unwrap_or_default(), gas = receipt.gas_used(),
                "checkpoint anchored");
            return Ok(self.receipt_of(chain_id, &receipt, false));
        }
    }

    /// Status check and confirmations for a receipt found for the in-flight transaction.
    async fn finish(
        &self,
        what: &str,
        receipt: TransactionReceipt,
        started: Instant,
    ) -> Result<TransactionReceipt, ChainError> {
        if !receipt.status() {
            return Err(ChainError::Reverted {
                url: self.client.url.clone(),
                what: what.to_string(),
                tx_hash: receipt.transaction_hash,
                block_number: receipt.block_number().unwrap_or_default(),
                gas_used: receipt.gas_used(),
            });
        }
        self.client.confirm(what, receipt, started).await
    }

    fn receipt_of(
        &self,
        chain_id: u64,
        receipt: &TransactionReceipt,
        already_anchored: bool,
    ) -> AnchorReceipt {
        AnchorReceipt {
            chain_id,
            contract_address: self.contract,
            tx_hash: receipt.transaction_hash.0,
            block_number: receipt.block_number().unwrap_or_default(),
            gas_used: receipt.gas_used(),
            already_anchored,
        }
    }

    /// [`Anchorer::anchor`], retried with exponential backoff while the error is transient
    /// (each retry logged with `tracing::warn!`), until it succeeds, fails for good, or
    /// `policy.timeout` passes ([`ChainError::RetriesExhausted`]). Every attempt starts with
    /// the on-chain look-up, so a retry never anchors twice.
    pub async fn anchor_with_retry(
        &self,
        origin: &str,
        tree_size: u64,
        root: [u8; 32],
        policy: &RetryPolicy,
    ) -> Result<AnchorReceipt, ChainError> {
        let started = Instant::now();
        let deadline = started + policy.timeout;
        let mut backoff = policy.initial_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let attempt = self.anchor(origin, tree_size, root);
            let err = match tokio::time::timeout_at(deadline.into(), attempt).await {
                Ok(Ok(receipt)) => return Ok(receipt),
                Ok(Err(err)) if !err.is_transient() => return Err(err),
                Ok(Err(err)) => err,
                Err(_elapsed) => ChainError::ReceiptTimeout {
                    url: self.client.url.clone(),
                    what: describe(origin, tree_size, &B256::from(root)),
                    tx_hash: self.in_flight_hash().unwrap_or_default(),
                    waited: started.elapsed(),
                },
            };
            let now = Instant::now();
            if now + backoff >= deadline {
                return Err(ChainError::RetriesExhausted {
                    url: self.client.url.clone(),
                    what: describe(origin, tree_size, &B256::from(root)),
                    attempts,
                    elapsed: started.elapsed(),
                    last: Box::new(err),
                });
            }
            tracing::warn!(attempt = attempts, retry_in = ?backoff, error = %err,
                "anchoring failed, will retry");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(policy.max_backoff);
        }
    }

    fn in_flight_hash(&self) -> Option<B256> {
        let guard = self.in_flight.try_lock().ok()?;
        guard.as_ref().map(|(_, tx)| tx.hash)
    }

    /// Every `Anchored` event of the contract since `from_block`, in chain order; with
    /// `origin`, only that origin's. This is what an auditor compares with the log's
    /// checkpoints.
    pub async fn anchored(&self, origin: Option<&str>) -> Result<Vec<OnChainAnchor>, ChainError> {
        let what = match origin {
            Some(origin) => format!("listing anchors of {origin:?}"),
            None => "listing anchors".to_string(),
        };
        self.logs(&what, origin.map(|o| keccak256(o.as_bytes())))
            .await
    }

    /// The first event for exactly this checkpoint, if any.
    async fn find(
        &self,
        what: &str,
        event: &Anchored,
    ) -> Result<Option<OnChainAnchor>, ChainError> {
        let anchors = self.logs(what, Some(event.originHash)).await?;
        Ok(anchors
            .into_iter()
            .find(|a| a.tree_size == event.treeSize && a.root == event.root.0))
    }

    async fn logs(
        &self,
        what: &str,
        origin_hash: Option<B256>,
    ) -> Result<Vec<OnChainAnchor>, ChainError> {
        let head = self
            .client
            .provider
            .get_block_number()
            .await
            .map_err(self.client.rpc_err(what, "eth_blockNumber"))?;
        let mut filter = Filter::new()
            .address(self.contract)
            .event_signature(Anchored::SIGNATURE_HASH);
        if let Some(hash) = origin_hash {
            filter = filter.topic1(hash);
        }
        let mut anchors = Vec::new();
        let mut from = self.from_block;
        while from <= head {
            let to = head.min(from.saturating_add(self.log_block_range - 1));
            let logs = self
                .client
                .provider
                .get_logs(&filter.clone().from_block(from).to_block(to))
                .await
                .map_err(self.client.rpc_err(what, "eth_getLogs"))?;
            for log in logs.iter().filter(|log| !log.removed) {
                anchors.push(self.decode(what, log)?);
            }
            from = to + 1;
        }
        anchors.sort_by_key(|a| (a.block_number, a.log_index));
        Ok(anchors)
    }

    fn decode(&self, what: &str, log: &Log) -> Result<OnChainAnchor, ChainError> {
        let unexpected = |reason: String| ChainError::Unexpected {
            url: self.client.url.clone(),
            what: what.to_string(),
            reason,
        };
        let decoded = log
            .log_decode::<Anchored>()
            .map_err(|e| unexpected(format!("undecodable Anchored log: {e}")))?;
        let event = decoded.inner.data;
        let (Some(tx_hash), Some(block_number), Some(log_index)) =
            (log.transaction_hash, log.block_number, log.log_index)
        else {
            return Err(unexpected(
                "log without transaction hash, block or index".into(),
            ));
        };
        Ok(OnChainAnchor {
            origin_hash: event.originHash.0,
            tree_size: event.treeSize,
            root: event.root.0,
            tx_hash: tx_hash.0,
            block_number,
            log_index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_matches_the_bindings() {
        let artifact: serde_json::Value = serde_json::from_str(ARTIFACT_JSON).unwrap();
        let signatures: Vec<String> = artifact["abi"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item["type"] == "function" || item["type"] == "event")
            .map(|item| {
                let types: Vec<&str> = item["inputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|input| input["type"].as_str().unwrap())
                    .collect();
                format!("{}({})", item["name"].as_str().unwrap(), types.join(","))
            })
            .collect();
        assert!(signatures.contains(&Anchored::SIGNATURE.to_string()));
        assert!(signatures.contains(&anchorCall::SIGNATURE.to_string()));
        assert!(!creation_bytecode().unwrap().is_empty());
    }

    #[test]
    fn origin_hash_is_keccak_of_the_bytes() {
        // keccak256("") is the well-known c5d2…a470.
        assert_eq!(
            alloy::hex::encode(origin_hash("")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let config = ChainConfig::new("http://127.0.0.1:1", "0xdeadbeef");
        assert!(!format!("{config:?}").contains("deadbeef"));
    }

    #[test]
    fn bad_key_is_reported_without_the_key() {
        let config = ChainConfig::new("http://127.0.0.1:1", "0xnot-a-key-secret");
        let err = deploy_blocking(&config);
        assert!(matches!(err, ChainError::InvalidKey { .. }), "{err}");
        assert!(!err.to_string().contains("secret"));
    }

    fn deploy_blocking(config: &ChainConfig) -> ChainError {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(deploy(config))
            .unwrap_err()
    }
}
