//! Against a real anvil (foundry's dev node) that each test starts on its own loopback port.
//!
//! anvil comes from npm through `scripts/infra install`; `PAVILION_ANVIL_BIN` points at
//! another binary.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::providers::{Provider, RootProvider};
use pavilion_chain::dev::{Anvil, DEV_KEY};
use pavilion_chain::{
    deploy, origin_hash, AnchorReceipt, Anchorer, ChainConfig, ChainError, OnChainAnchor,
    RetryPolicy,
};

/// anvil's second dev account: funded, but not the contract's owner.
const OTHER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const ORIGIN: &str = "pavilion.test/audit-log";

/// A port that was free a moment ago (anvil binds it right after).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn config(url: &str) -> ChainConfig {
    let mut config = ChainConfig::new(url, DEV_KEY);
    // anvil mines each transaction at once: poll fast to keep the tests short.
    config.poll_interval = Duration::from_millis(50);
    config.receipt_timeout = Duration::from_secs(10);
    config
}

/// Checkpoint `i` of the test log: sizes 10, 20, …; roots look random, as real ones do
/// (calldata zeros are cheaper, so a root full of zeros would flatter the gas figure).
fn checkpoint(i: u64) -> (u64, [u8; 32]) {
    (i * 10, origin_hash(&format!("root {i}")))
}

fn expected(i: u64, receipt: &AnchorReceipt, log_index: u64) -> OnChainAnchor {
    let (tree_size, root) = checkpoint(i);
    OnChainAnchor {
        origin_hash: origin_hash(ORIGIN),
        tree_size,
        root,
        tx_hash: receipt.tx_hash,
        block_number: receipt.block_number,
        log_index,
    }
}

async fn head_and_nonce(url: &str, anchorer: &Anchorer) -> (u64, u64) {
    let provider: RootProvider = RootProvider::new_http(url.parse().unwrap());
    let head = provider.get_block_number().await.unwrap();
    let nonce = provider
        .get_transaction_count(anchorer.account())
        .await
        .unwrap();
    (head, nonce)
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "pavilion_chain=info".into()),
        )
        .with_test_writer()
        .try_init();
}

#[tokio::test]
async fn anchors_in_order_once_each_and_cheaply() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let anvil = Anvil::start(free_port(), None, &dir.path().join("anvil.log"));
    let url = anvil.url();

    let deployment = deploy(&config(&url)).await.unwrap();
    let mut config = config(&url);
    config.contract = Some(deployment.address);
    config.from_block = deployment.block_number;
    let anchorer = Anchorer::connect(&config).unwrap();
    assert!(anchorer.anchored(None).await.unwrap().is_empty());

    let mut receipts = Vec::new();
    for i in 1..=3 {
        let (size, root) = checkpoint(i);
        let receipt = anchorer.anchor(ORIGIN, size, root).await.unwrap();
        println!("anchor {i}: gas used {}", receipt.gas_used);
        assert!(
            receipt.gas_used < 30_000,
            "anchor {i} used {} gas",
            receipt.gas_used
        );
        assert!(!receipt.already_anchored);
        assert_eq!(receipt.chain_id, 31337);
        assert_eq!(receipt.contract_address, deployment.address);
        receipts.push(receipt);
    }

    // anvil mines one block per transaction, so each event is log 0 of its block.
    let want: Vec<_> = (1..=3)
        .map(|i| expected(i, &receipts[i as usize - 1], 0))
        .collect();
    assert_eq!(anchorer.anchored(None).await.unwrap(), want);
    assert_eq!(anchorer.anchored(Some(ORIGIN)).await.unwrap(), want);
    assert!(anchorer
        .anchored(Some("another/log"))
        .await
        .unwrap()
        .is_empty());

    // Anchoring a checkpoint again finds the event and sends nothing.
    let before = head_and_nonce(&url, &anchorer).await;
    let (size, root) = checkpoint(2);
    let again = anchorer.anchor(ORIGIN, size, root).await.unwrap();
    assert!(again.already_anchored);
    assert_eq!(
        AnchorReceipt {
            already_anchored: false,
            ..again
        },
        receipts[1]
    );
    assert_eq!(head_and_nonce(&url, &anchorer).await, before);
    assert_eq!(anchorer.anchored(None).await.unwrap().len(), 3);

    // Same origin and size with another root is a different checkpoint (a fork of the log
    // that an auditor must see), so it is anchored.
    let forked = anchorer.anchor(ORIGIN, size, [7; 32]).await.unwrap();
    assert!(!forked.already_anchored);
    assert_eq!(anchorer.anchored(None).await.unwrap().len(), 4);

    // Only the deployer may anchor.
    let mut stranger = config.clone();
    stranger.private_key = OTHER_KEY.to_string();
    let err = Anchorer::connect(&stranger)
        .unwrap()
        .anchor(ORIGIN, 40, [4; 32])
        .await
        .unwrap_err();
    assert!(matches!(err, ChainError::NotOwner { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn waits_for_confirmations() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let anvil = Anvil::start(free_port(), None, &dir.path().join("anvil.log"));
    let url = anvil.url();
    let mut config = config(&url);
    config.contract = Some(deploy(&config).await.unwrap().address);
    config.confirmations = 3;

    // anvil mines only on transactions: a miner stands in for the rest of the network.
    let miner = tokio::spawn({
        let provider: RootProvider = RootProvider::new_http(url.parse().unwrap());
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _: serde_json::Value =
                    provider.raw_request("evm_mine".into(), ()).await.unwrap();
            }
        }
    });
    let anchorer = Anchorer::connect(&config).unwrap();
    let (size, root) = checkpoint(1);
    let receipt = anchorer.anchor(ORIGIN, size, root).await.unwrap();
    let (head, _) = head_and_nonce(&url, &anchorer).await;
    miner.abort();
    assert!(
        head >= receipt.block_number + 3,
        "head {head}, receipt {receipt:?}"
    );
}

#[tokio::test]
async fn rides_out_a_node_outage_without_anchoring_twice() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let log = dir.path().join("anvil.log");
    let port = free_port();
    let anvil = Anvil::start(port, Some(&state), &log);
    let url = anvil.url();

    let mut config = config(&url);
    let deployment = deploy(&config).await.unwrap();
    config.contract = Some(deployment.address);
    let anchorer = Arc::new(Anchorer::connect(&config).unwrap());
    let (size, root) = checkpoint(1);
    let first = anchorer.anchor(ORIGIN, size, root).await.unwrap();

    anvil.stop();
    assert!(state.is_file(), "anvil wrote no state file on SIGTERM");

    let policy = RetryPolicy {
        timeout: Duration::from_secs(40),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    };
    let retrying = tokio::spawn({
        let anchorer = anchorer.clone();
        async move {
            let (size, root) = checkpoint(2);
            anchorer
                .anchor_with_retry(ORIGIN, size, root, &policy)
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !retrying.is_finished(),
        "anchored with the node down: {:?}",
        retrying.await
    );

    let anvil = Anvil::start(port, Some(&state), &log);
    let second = tokio::time::timeout(Duration::from_secs(30), retrying)
        .await
        .expect("no anchor 30 s after the node came back")
        .unwrap()
        .unwrap();
    assert!(!second.already_anchored);
    assert!(second.block_number > first.block_number);

    // The restarted chain kept the first anchor, and holds each checkpoint once, in order.
    let want = vec![expected(1, &first, 0), expected(2, &second, 0)];
    assert_eq!(anchorer.anchored(None).await.unwrap(), want);
    // A retry of the second checkpoint (as after a crash before it was recorded) sends
    // nothing.
    let (size, root) = checkpoint(2);
    let again = anchorer
        .anchor_with_retry(ORIGIN, size, root, &RetryPolicy::default())
        .await
        .unwrap();
    assert!(again.already_anchored);
    assert_eq!(again.tx_hash, second.tx_hash);
    assert_eq!(anchorer.anchored(None).await.unwrap(), want);
    drop(anvil);
}

/// A process that sent an anchor and died before the receipt came: its successor, which
/// knows nothing of that transaction, must wait for it rather than send a second one.
#[tokio::test]
async fn a_restarted_anchorer_waits_for_the_pending_transaction_of_its_predecessor() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let anvil = Anvil::start(free_port(), None, &dir.path().join("anvil.log"));
    let url = anvil.url();
    let mut config = config(&url);
    config.contract = Some(deploy(&config).await.unwrap().address);
    config.receipt_timeout = Duration::from_secs(1);

    let provider: RootProvider = RootProvider::new_http(url.parse().unwrap());
    let _: serde_json::Value = provider
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .unwrap();
    let (size, root) = checkpoint(1);
    let crashed = Anchorer::connect(&config).unwrap();
    let err = crashed.anchor(ORIGIN, size, root).await.unwrap_err();
    assert!(matches!(err, ChainError::ReceiptTimeout { .. }), "{err}");
    drop(crashed);

    let mut patient = config.clone();
    patient.receipt_timeout = Duration::from_secs(20);
    let successor = Anchorer::connect(&patient).unwrap();
    let waiting = tokio::spawn(async move {
        let receipt = successor.anchor(ORIGIN, size, root).await;
        (receipt, successor)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "{:?}", waiting.await.unwrap().0);
    let _: serde_json::Value = provider.raw_request("evm_mine".into(), ()).await.unwrap();

    let (receipt, successor) = waiting.await.unwrap();
    let receipt = receipt.unwrap();
    assert!(receipt.already_anchored, "{receipt:?}");
    assert_eq!(
        successor.anchored(None).await.unwrap(),
        vec![expected(1, &receipt, 0)]
    );
    let nonce = provider
        .get_transaction_count(successor.account())
        .pending()
        .await
        .unwrap();
    assert_eq!(nonce, 2, "deploy and one anchor, nothing else sent");
}

#[test]
fn gives_up_after_the_timeout_with_context() {
    let port = free_port(); // nothing listens there
    let mut config = config(&format!("http://127.0.0.1:{port}"));
    config.contract = Some(
        "0x5FbDB2315678afecb367f032d93F642f64180aa3"
            .parse()
            .unwrap(),
    );
    let anchorer = Anchorer::connect(&config).unwrap();
    let policy = RetryPolicy {
        timeout: Duration::from_secs(1),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let err = runtime
        .block_on(anchorer.anchor_with_retry(ORIGIN, 5, [5; 32], &policy))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    let ChainError::RetriesExhausted { attempts, last, .. } = &err else {
        panic!("{err}");
    };
    assert!(*attempts > 2, "{err}");
    assert!(last.is_transient(), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(
        message.contains(ORIGIN) && message.contains("size 5"),
        "{message}"
    );
}

/// `contracts/build.sh --check`: the checked-in artifact is what the pinned solc produces
/// from the checked-in source.
#[test]
fn contract_artifact_is_reproducible() {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(have("node") && have("npm")) {
        eprintln!(
            "node/npm not installed: reproducibility of contracts/AuditAnchor.json not checked"
        );
        return;
    }
    // The checkout being tested, read at run time: a test binary reused from a build in
    // another checkout must not check that one.
    let script =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("contracts/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} --check failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
