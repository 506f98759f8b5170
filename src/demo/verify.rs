//! The end of a demo run: waiting for the checkpoint that covers a decision to be anchored,
//! then verifying that decision end to end — its signature from the JWKS alone, its audit
//! entries' inclusion in the signed checkpoint, the checkpoint's root on chain.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use pavilion_schemas::{AnchorReceipt, Checkpoint, Decision, Event};

use super::processes::Cli;
use crate::cli::ClusterArgs;

/// The checkpoint covering `request_id`'s entries, once it is anchored, and its receipt.
pub(super) fn anchored_checkpoint(
    cli: &Cli,
    topology: &pavilion_runtime::topology::Topology,
    cluster: &ClusterArgs,
    request_id: &str,
    timeout: Duration,
) -> Result<(Checkpoint, AnchorReceipt)> {
    let anchors = crate::cli::topic_for(topology, AnchorReceipt::FULL_NAME)?.name;
    let checkpoints = crate::cli::topic_for(topology, Checkpoint::FULL_NAME)?.name;
    let log = crate::cli::topic_for(topology, pavilion_schemas::AuditEntry::FULL_NAME)?.name;
    let deadline = Instant::now() + timeout;
    loop {
        if Instant::now() > deadline {
            bail!("no anchored checkpoint covers {request_id} after {timeout:?} (see audit and anchor logs)");
        }
        // The proof names the checkpoint the request's entries are in.
        if let Ok(lines) = cli.ok(&[
            "audit",
            "prove",
            "--request-id",
            request_id,
            "--jwks",
            "jwks.json",
            "--json",
        ]) {
            let checkpoint_line = lines
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["kind"] == "checkpoint");
            if let Some(c) = checkpoint_line {
                let (origin, size) = (
                    c["origin"].as_str().unwrap_or_default().to_owned(),
                    c["tree_size"].as_i64().unwrap_or(-1),
                );
                // The shard's last checkpoint (covering all it has): it stays the latest, so
                // the proofs made next are against it.
                let entries = crate::cli::read_all::<pavilion_schemas::AuditEntry>(cluster, &log)?
                    .into_iter()
                    .filter(|(_, e)| e.origin == origin)
                    .count() as i64;
                if entries > size {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                let receipt = crate::cli::read_all::<AnchorReceipt>(cluster, &anchors)?
                    .into_iter()
                    .map(|(_, r)| r)
                    .find(|r| r.checkpoint.origin == origin && r.checkpoint.tree_size == size);
                if let Some(receipt) = receipt {
                    let checkpoint = crate::cli::read_all::<Checkpoint>(cluster, &checkpoints)?
                        .into_iter()
                        .map(|(_, c)| c)
                        .find(|c| c.origin == origin && c.tree_size == size)
                        .context("the anchored checkpoint is gone")?;
                    return Ok((checkpoint, receipt));
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The sample decision: JWT signature against the JWKS alone, inclusion proof of its audit
/// entries against the signed checkpoint, the checkpoint's root in the contract's events.
pub(super) fn verify_sample(
    cli: &Cli,
    cluster: &ClusterArgs,
    log_topic: &str,
    d: &Decision,
    checkpoint: &Checkpoint,
    receipt: &AnchorReceipt,
    rpc: &str,
) -> Result<()> {
    let dir = &cli.dir;
    let pavilion_schemas::Payload::Text(token) = &d.payload else {
        bail!("a binary payload");
    };
    let jws = pavilion_signing::jose::parse(token)?;
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("jwks.json"))?)?;
    let key = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == jws.kid.as_str())
        .and_then(|k| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(k["x"].as_str()?)
                .ok()
        })
        .and_then(|x| <[u8; 32]>::try_from(x).ok())
        .and_then(|x| VerifyingKey::from_bytes(&x).ok())
        .context("the decision's kid is not in the JWKS")?;
    key.verify(
        jws.signing_input.as_bytes(),
        &Signature::from_slice(&jws.signature)?,
    )
    .context("the signature does not verify")?;
    println!(
        "  ✓ signature: EdDSA by {} (from jwks.json alone); claims {}",
        jws.kid,
        String::from_utf8_lossy(&jws.payload)
            .chars()
            .take(120)
            .collect::<String>()
            + "…"
    );

    let lines = cli.ok(&[
        "audit",
        "prove",
        "--request-id",
        &d.request_id,
        "--jwks",
        "jwks.json",
        "--json",
    ])?;
    let mut proved = 0;
    let known: Vec<pavilion_audit::note::NoteKey> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "checkpoint")
        .flat_map(|v| v["vkeys"].as_array().cloned().unwrap_or_default())
        .filter_map(|k| pavilion_audit::note::NoteKey::from_vkey(k.as_str()?).ok())
        .collect();
    let body = pavilion_audit::note::open(&checkpoint.note, &known)
        .context("the checkpoint's signature")?;
    // Keyed by request id after tenancy, a request's entries may sit in several shards: each
    // proof is checked against its own shard's signed checkpoint, as `audit prove` gave it.
    let mut bodies = std::collections::BTreeMap::new();
    for v in lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "checkpoint")
    {
        let shard = pavilion_audit::note::open(v["note"].as_str().unwrap_or_default(), &known)
            .context("a checkpoint's signature")?;
        bodies.insert(shard.origin.clone(), shard);
    }
    // Each proof checked (ct-merkle) from the entry itself as read from the log.
    let entries: Vec<pavilion_schemas::AuditEntry> = crate::cli::read_all(cluster, log_topic)?
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e: &pavilion_schemas::AuditEntry| {
            e.request_id.as_deref() == Some(d.request_id.as_str())
        })
        .collect();
    for v in lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "inclusion")
    {
        let proof: Vec<[u8; 32]> = v["proof"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| B64.decode(p.as_str()?).ok()?.try_into().ok())
            .collect();
        let (index, size) = (
            v["leaf_index"].as_u64().unwrap_or(0),
            v["tree_size"].as_u64().unwrap_or(0),
        );
        let entry = entries
            .iter()
            .find(|e| {
                e.origin == v["origin"].as_str().unwrap_or_default() && e.index as u64 == index
            })
            .context("a proof for an entry that is not in the log")?;
        let shard = bodies
            .get(entry.origin.as_str())
            .context("a proof without its shard's checkpoint")?;
        if size != shard.size
            || !pavilion_audit::log::verify_inclusion(
                &entry.leaf_input(),
                index,
                size,
                &shard.root,
                &proof,
            )
        {
            bail!("an inclusion proof of {} does not verify", d.request_id);
        }
        proved += 1;
    }
    println!(
        "  ✓ audit: {proved} entries of the request included in {} shard(s) (RFC 6962 proofs, checkpoint signatures verified); {} size {} is anchored",
        bodies.len(),
        body.origin,
        body.size
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let contract = pavilion_chain::Address::try_from(receipt.contract_address.as_slice())
        .map_err(|_| anyhow::anyhow!("contract address"))?;
    let on_chain = runtime.block_on(async {
        pavilion_chain::Anchorer::reader(rpc, contract)?
            .anchored(Some(&checkpoint.origin))
            .await
    })?;
    let found = on_chain
        .iter()
        .find(|a| a.tree_size == body.size && a.root == body.root)
        .context("the checkpoint's root is not on chain")?;
    println!(
        "  ✓ chain: root anchored by tx 0x{} in block {} of {rpc}",
        hex::encode(found.tx_hash),
        found.block_number
    );
    Ok(())
}

/// A compact token's claims (its signature is checked by `verify_sample`).
fn signed_payload(d: &Decision) -> Result<serde_json::Value> {
    let pavilion_schemas::Payload::Text(token) = &d.payload else {
        bail!("a binary payload");
    };
    Ok(serde_json::from_slice(
        &pavilion_signing::jose::parse(token)?.payload,
    )?)
}

/// Checks the zero-knowledge proof a decision's signed payload carries, as the relying party
/// would: the circuit's pinned verifying key, the public inputs from the token, the nonce
/// derived from its own request id. Says so when the decision carries none.
pub(super) fn verify_proof(d: &Decision) -> Result<()> {
    let payload = signed_payload(d)?;
    let evidence = payload["claims"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["evidence"].as_array().cloned().unwrap_or_default())
        .find(|e| e["kind"] == "zk_predicate");
    let Some(zk) = evidence.as_ref().map(|e| &e["zk"]) else {
        println!("  (this decision's policy does not put proofs in its payload)");
        return Ok(());
    };
    let circuit = pavilion_zk::Circuit::from_id(zk["circuit"].as_str().unwrap_or_default())
        .context("an unknown circuit")?;
    if zk["verifying_key_sha256"].as_str() != Some(&hex::encode(circuit.verifying_key_hash())) {
        bail!("the proof names another verifying key than the pinned one");
    }
    let inputs: Vec<String> = zk["public_inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let inputs = pavilion_zk::PublicInputs::from_decimal_strings(&inputs)?;
    if inputs.nonce != pavilion_zk::nonce_from_request_id(d.request_id.as_bytes()) {
        bail!("the proof was made for another request");
    }
    let proof = pavilion_zk::Proof::from_eip197(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(zk["proof"].as_str().unwrap_or_default())?,
    )?;
    pavilion_zk::verify(circuit, &inputs, &proof).context("the proof does not verify")?;
    println!(
        "  ✓ proof: {} (born on or before {}) verifies against the pinned key {}…, for this request's nonce; the birth date itself is nowhere in the decision",
        circuit.id(),
        inputs.bound,
        &hex::encode(circuit.verifying_key_hash())[..16]
    );
    Ok(())
}

/// `provider`'s BBS key from the providers' published keys (`pavilion provider keys`), as a
/// relying party takes it.
pub(super) fn published_bbs_key(
    document: &std::path::Path,
    provider: &str,
) -> Result<pavilion_credentials::bbs::PublicKey> {
    let keys: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(document)?)
        .with_context(|| format!("{} is not JSON", document.display()))?;
    let x = keys["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["provider"] == provider)
        .flat_map(|p| p["keys"].as_array().into_iter().flatten())
        .find(|k| k["alg"] == pavilion_credentials::bbs::KEY_ALGORITHM)
        .and_then(|k| k["x"].as_str())
        .with_context(|| format!("{} has no BBS key of {provider}", document.display()))?;
    let bytes = pavilion_credentials::jose::base64url_decode(x)
        .with_context(|| format!("{provider}'s BBS key in {}", document.display()))?;
    Ok(pavilion_credentials::bbs::PublicKey::from_bytes(&bytes)?)
}

/// Checks the BBS disclosure a decision's signed payload carries, as the relying party would:
/// the proof against the provider's published BBS key (not the one the payload names), the
/// nonce derived from its own request id, the header's issuer and expiry. Writes what
/// `tests/interop/bbs-js/verify.mjs` reads to `js_input`, for an independent check.
pub(super) fn verify_disclosure(
    d: &Decision,
    registered: &pavilion_credentials::bbs::PublicKey,
    js_input: &std::path::Path,
) -> Result<()> {
    use pavilion_credentials::bbs;
    let payload = signed_payload(d)?;
    let claim = payload["claims"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["attributes"].is_object())
        .context("no claim of this decision discloses an attribute")?;
    let evidence = claim["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == "bbs_disclosure")
        .context("disclosed attributes without their proof")?;
    let b = &evidence["bbs"];
    let bytes = |field: &str| -> Result<Vec<u8>> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b[field].as_str().unwrap_or_default())
            .with_context(|| format!("bbs.{field}"))
    };
    if bytes("public_key")? != registered.to_bytes() {
        bail!("the payload names another BBS key than the provider's published one");
    }
    let nonce: [u8; bbs::NONCE_BYTES] =
        pavilion_zk::field_to_bytes(pavilion_zk::nonce_from_request_id(d.request_id.as_bytes()));
    if bytes("presentation_header")? != nonce {
        bail!("the disclosure was made for another request");
    }
    let disclosed: Vec<(usize, String, String)> = b["disclosed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["index"].as_u64().unwrap_or(u64::MAX) as usize,
                a["name"].as_str().unwrap_or_default().to_owned(),
                a["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let disclosure = bbs::Disclosure {
        header: bytes("header")?,
        disclosed: disclosed.clone(),
        proof: bytes("proof")?,
    };
    let header = disclosure
        .verify(registered, &nonce)
        .context("the disclosure does not verify")?;
    for (_, name, value) in &disclosed {
        if claim["attributes"][name] != *value {
            bail!("the claim's {name} is not the value the proof discloses");
        }
    }
    std::fs::write(
        js_input,
        serde_json::json!({
            "publicKey": hex::encode(registered.to_bytes()),
            "proof": hex::encode(&disclosure.proof),
            "header": hex::encode(&disclosure.header),
            "presentationHeader": hex::encode(nonce),
            "disclosed": disclosed.iter().map(|(i, _, v)| serde_json::json!([i, hex::encode(v)])).collect::<Vec<_>>(),
        })
        .to_string(),
    )?;
    let shown: Vec<String> = disclosed
        .iter()
        .map(|(_, n, v)| format!("{n} = {v}"))
        .collect();
    println!(
        "  ✓ disclosure: {} of {}'s {} signed attributes ({}), verified with the provider's BBS key from provider-keys.json for this request's nonce; the others are nowhere in the decision",
        shown.join(", "),
        header.issuer,
        header.attributes.len(),
        header.attributes.join(", ")
    );
    Ok(())
}

/// One line on the proofs of the run: verified and refused by the broker (its psi stage's
/// counters), the batch sizes it verified them in, and the provider's proving time.
pub(super) fn proofs_summary(pipeline_metrics: &str, evidence_metrics: &str) -> String {
    let get = |addr: &str| {
        ureq::get(&format!("http://{addr}/metrics"))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default()
    };
    let (pipeline, evidence) = (get(pipeline_metrics), get(evidence_metrics));
    // `pavilion_stage_events_total{event="proofs.batch",label="16-63",stage="psi"} 3`
    let events = |event: &str| -> Vec<(String, f64)> {
        let needle = format!("event=\"{event}\",label=\"");
        pipeline
            .lines()
            .filter(|l| l.starts_with("pavilion_stage_events_total") && l.contains(&needle))
            .filter_map(|l| {
                let label = l.split(&needle).nth(1)?.split('"').next()?.to_owned();
                Some((label, l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect()
    };
    let total = |event: &str| events(event).iter().map(|(_, n)| *n as u64).sum::<u64>();
    let batches: Vec<String> = events("proofs.batch")
        .iter()
        .map(|(size, n)| format!("{n:.0}× {size}"))
        .collect();
    let sum = |name: &str| -> f64 {
        evidence
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let proving_ms = 1000.0 * sum("pavilion_evidence_proving_seconds_sum")
        / sum("pavilion_evidence_proving_seconds_count").max(1.0);
    format!(
        "{} verified, {} refused; batches verified: {}; proving {:.0} ms a proof on average at the provider; BBS disclosures {} verified, {} refused",
        total("proofs.verified"),
        total("proofs.rejected"),
        if batches.is_empty() { "none".to_owned() } else { batches.join(", ") },
        proving_ms,
        total("disclosures.verified"),
        total("disclosures.rejected"),
    )
}
