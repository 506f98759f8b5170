//! `pavilion bench disclosure`: selective disclosure by BBS signatures (issue 18), each figure
//! against a baseline measured in the same run, over `--runs` runs (every figure is reported
//! as min / median / max of them).
//!
//! 1. **BBS operations**, in this process on one thread, over one member's 10 attributes as a
//!    provider signs them (`pavilion_credentials::bbs`: the draft's octet interface through
//!    zkryptium, BLS12-381-SHA-256; the header binds issuer, schema, names and expiry): sign;
//!    derive a proof disclosing 1 of the 10 (the country, as the lender asks) and 5 of them;
//!    verify each derived proof (as psi does) and the signature; µs per operation, p50/p99
//!    of `--ops` operations of each kind a run. Baseline: Ed25519 (ed25519-dalek, as decisions
//!    and requests are signed) signing and verifying the same octets — the header and the 10
//!    values, length-prefixed; each BBS figure ÷ Ed25519's.
//! 2. **Sizes**: the derived proofs (1 and 5 disclosed), the signature and the public key,
//!    beside Ed25519's.
//! 4. **Credential verification with a status list look-up**, in this process on one thread,
//!    as psi checks `credential` evidence: an SD-JWT VC over the same 10 attributes, presented
//!    with the country disclosed and a key binding, verified (`verify_presentation`:
//!    issuer signature, disclosure digests, key binding, validity); the issuer's signed
//!    Bitstring Status List verified and inflated and the credential's bit read; and both
//!    together. Baseline: Ed25519 verify of the same octets.
//! 3. **Latency** of a disclosure claim through the broker and the provider on loopback
//!    (the harness of `bench zk`, [`super::evidence`]): the demo's lender, whose policy asks
//!    `residence` with `bbs_disclosure` evidence and `disclose: [country]`, so psi asks bank-eu's
//!    evidence service to derive a proof from the member's signed birth date and country,
//!    and verifies it; paced at `--rate`, from produce to the decision visible
//!    read_committed. Baseline: the same tenant and subjects asking `account_verified`
//!    (membership only).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Args;
use ed25519_dalek::Signer as _;
use pavilion_credentials::bbs;
use pavilion_runtime::clock::epoch_millis;
use serde_json::{json, Value};

use super::evidence::{each_run, record_latency, EndToEndArgs, RoundTrip, LATENCY_SUMMARY};
use super::runs::{loadavg, Runs};
use super::write_result;
use crate::demo::percentile;
use crate::demo::setup::{TenantSetup, BANK_POLICY};

/// Options of the disclosure benchmark. The defaults finish in about three minutes on a
/// 2-core machine; `--skip-e2e` in under one.
#[derive(Args)]
pub struct DisclosureBenchArgs {
    /// Runs of every measurement; each figure is reported as the median, min and max of them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Operations of each kind timed per run, for the p50/p99 (µs): BBS sign, verify the
    /// signature, derive a proof disclosing 1 and 5 of the 10 attributes and verify each;
    /// Ed25519 sign and verify. One round takes every kind once, in turn.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(2..))]
    pub ops: u32,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/disclosure.json")]
    pub out: PathBuf,
    /// The end-to-end part: a `residence` claim (BBS disclosure of the country) against
    /// `account_verified`; `--skip-e2e` measures the operations and sizes only.
    #[command(flatten)]
    pub e2e: EndToEndArgs,
}

/// The member's attribute names, in message order, and its values (canonical text).
const NAMES: [&str; 10] = [
    "birthdate",
    "country",
    "given_name",
    "family_name",
    "income",
    "account_opened",
    "iban",
    "city",
    "postal_code",
    "email_verified",
];
const VALUES: [&str; 10] = [
    "1990-04-01",
    "DE",
    "Ada",
    "Novak",
    "52000",
    "2012-09-17",
    "DE89370400440532013000",
    "Berlin",
    "10115",
    "true",
];

/// The proofs derived: (figure name, indexes disclosed). One: the country, as the lender
/// asks; five: every other attribute.
const DISCLOSED: [(&str, &[usize]); 2] = [("1_of_10", &[1]), ("5_of_10", &[0, 2, 4, 6, 8])];

/// The messages a proof discloses, with their indexes, as `bbs::verify_proof` takes them.
type Revealed = Vec<(usize, Vec<u8>)>;

/// One member's signed attribute set, and the same octets under Ed25519.
struct Member {
    key: bbs::SigningKey,
    header: Vec<u8>,
    messages: Vec<Vec<u8>>,
    ed25519: ed25519_dalek::SigningKey,
    /// The header, then each value with its length (4 bytes, big-endian) before it.
    octets: Vec<u8>,
}

impl Member {
    fn new() -> Result<Member> {
        let header = bbs::AttributeHeader {
            issuer: "bank-eu".into(),
            schema: "pavilion.member.v1".into(),
            attributes: NAMES.map(str::to_owned).to_vec(),
            expires_at_ms: 4_102_444_800_000,
        }
        .to_bytes()?;
        let messages: Vec<Vec<u8>> = VALUES.map(|v| v.as_bytes().to_vec()).to_vec();
        let mut octets = header.clone();
        for m in &messages {
            octets.extend_from_slice(&(m.len() as u32).to_be_bytes());
            octets.extend_from_slice(m);
        }
        Ok(Member {
            key: bbs::SigningKey::derive(&[7; 32], b"pavilion bench disclosure")?,
            header,
            messages,
            ed25519: ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            octets,
        })
    }

    /// A proof of `signature` disclosing `indexes`, for `nonce`, and what it discloses.
    fn derive(
        &self,
        signature: &[u8],
        nonce: &[u8],
        indexes: &[usize],
    ) -> Result<(Vec<u8>, Revealed)> {
        let public = self.key.public_key();
        let proof = bbs::derive_proof(
            public,
            signature,
            &self.header,
            nonce,
            &self.messages,
            indexes,
        )?;
        let disclosed = indexes
            .iter()
            .map(|&i| (i, self.messages[i].clone()))
            .collect();
        Ok((proof, disclosed))
    }
}

/// Each operation's times in one run (µs), by figure name.
type Times = BTreeMap<String, Vec<f64>>;

/// Each operation's p50 and p99 (µs) into `figures`, and returned by (operation, quantile).
fn record_quantiles(times: Times, figures: &mut Runs) -> BTreeMap<(String, &'static str), f64> {
    let mut quantiles = BTreeMap::new();
    for (op, mut t) in times {
        t.sort_by(f64::total_cmp);
        for (q, at) in [("p50", 0.5), ("p99", 0.99)] {
            let us = percentile(&t, at);
            figures.add(format!("{op}.{q}_us"), us);
            quantiles.insert((op.clone(), q), us);
        }
    }
    quantiles
}

/// `f`'s result, its time added to `op`'s.
fn timed<T>(times: &mut Times, op: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let us = started.elapsed().as_secs_f64() * 1e6;
    times.entry(op.to_owned()).or_default().push(us);
    out
}

/// One run of the operations (1), `count` rounds of every kind, into `figures`: each
/// operation's p50 and p99 (µs), and each BBS one's ÷ Ed25519's (derive and sign ÷ sign,
/// verify ÷ verify).
fn operations(member: &Member, run: u32, count: usize, figures: &mut Runs) -> Result<()> {
    let public = member.key.public_key();
    let ed25519 = member.ed25519.verifying_key();
    let (header, messages) = (&member.header, &member.messages);
    let mut times = Times::new();
    for i in 0..count {
        // A presentation header of the round's own, as a request's nonce is.
        let mut nonce = [0u8; bbs::NONCE_BYTES];
        nonce[..4].copy_from_slice(&run.to_be_bytes());
        nonce[4..12].copy_from_slice(&(i as u64).to_be_bytes());
        let signature = timed(&mut times, "bbs.sign", || {
            bbs::sign(&member.key, header, messages)
        })?;
        timed(&mut times, "bbs.verify_signature", || {
            bbs::verify_signature(public, &signature, header, messages)
        })
        .context("a valid BBS signature was refused")?;
        for (name, indexes) in DISCLOSED {
            let (proof, disclosed) = timed(&mut times, &format!("bbs.derive_{name}"), || {
                member.derive(&signature, &nonce, indexes)
            })?;
            timed(&mut times, &format!("bbs.verify_proof_{name}"), || {
                bbs::verify_proof(public, &proof, header, &nonce, &disclosed)
            })
            .context("a derived BBS proof was refused")?;
        }
        let signature = timed(&mut times, "ed25519.sign", || {
            member.ed25519.sign(&member.octets)
        });
        timed(&mut times, "ed25519.verify", || {
            ed25519.verify_strict(&member.octets, &signature)
        })
        .context("a valid Ed25519 signature was refused")?;
    }
    let quantiles = record_quantiles(times, figures);
    for ((op, q), us) in &quantiles {
        let Some(bbs_op) = op.strip_prefix("bbs.") else {
            continue;
        };
        let baseline = if bbs_op.starts_with("verify") {
            "ed25519.verify"
        } else {
            "ed25519.sign"
        };
        let ratio = us / quantiles[&(baseline.to_owned(), *q)];
        figures.add(format!("ratio_to_ed25519.{bbs_op}.{q}"), ratio);
    }
    Ok(())
}

/// One run of the credential checks (4), `count` of each kind, into `figures`: p50/p99 (µs)
/// and each ÷ Ed25519 verify's, at the same quantile, measured in the same run.
fn credential_checks(member: &Member, count: usize, figures: &mut Runs) -> Result<()> {
    use pavilion_credentials::credential::{self, Expectations, Format, Issuance};
    use pavilion_credentials::jose::KeySigner;
    use pavilion_credentials::status_list::{Bitstring, StatusEntry, StatusList};
    let now = epoch_millis(std::time::SystemTime::now());
    let issuer = KeySigner {
        kid: "a1",
        key: &member.ed25519,
    };
    let holder = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let attributes: BTreeMap<String, String> = NAMES
        .iter()
        .zip(VALUES)
        .map(|(n, v)| (n.to_string(), v.to_owned()))
        .collect();
    let list_url = "urn:pavilion:status-list:bank-eu:1";
    let sd_jwt = credential::issue(
        Format::SdJwtVc,
        &Issuance {
            issuer: "urn:pavilion:provider:bank-eu",
            attributes: &attributes,
            holder: &holder.verifying_key(),
            issued_at: now,
            valid_from: now,
            valid_until: now + 86_400_000,
            status: Some(StatusEntry {
                list: list_url.into(),
                index: 4_242,
            }),
        },
        &issuer,
    )?;
    let presentation = credential::present(
        &sd_jwt,
        &["country".to_owned()],
        &holder,
        "pavilion",
        "bench nonce",
        now,
    )?;
    // A list with one revoked credential in a thousand, as a provider's might have.
    let mut bits = Bitstring::default();
    for i in (0..131_072).step_by(1_000) {
        bits.set(i)?;
    }
    let list = StatusList {
        url: list_url.into(),
        issuer: "urn:pavilion:provider:bank-eu".into(),
        valid_from: now,
        ttl_ms: 300_000,
        bits,
    }
    .issue(&issuer)
    .map_err(anyhow::Error::msg)?;
    let public = member.ed25519.verifying_key().to_bytes().to_vec();
    let issuer_key = |_: &str, _: &str| Ok(public.clone());
    let expect = Expectations {
        nonce: "bench nonce",
        audience: "pavilion",
        now_ms: now,
        skew_ms: 60_000,
        max_age_ms: None,
        binding_max_age_ms: 300_000,
        issuer_key: &issuer_key,
    };
    let ed25519 = member.ed25519.verifying_key();
    let signature = member.ed25519.sign(&member.octets);
    let mut times = Times::new();
    for _ in 0..count {
        let presented = timed(&mut times, "credential.verify_presentation", || {
            credential::verify_presentation(&presentation, &expect)
        })?;
        let index = presented.status.as_ref().map_or(0, |s| s.index);
        let revoked = timed(&mut times, "credential.status_lookup", || {
            StatusList::verify(&list, &issuer_key).map(|l| l.bits.get(index))
        })?;
        anyhow::ensure!(!revoked, "the benchmark's credential reads as revoked");
        timed(&mut times, "credential.verify_with_status", || {
            let p = credential::verify_presentation(&presentation, &expect)?;
            let l = StatusList::verify(&list, &issuer_key)?;
            Ok::<_, pavilion_credentials::CredentialError>(
                l.bits.get(p.status.map_or(0, |s| s.index)),
            )
        })?;
        timed(&mut times, "credential.baseline_ed25519_verify", || {
            ed25519.verify_strict(&member.octets, &signature)
        })?;
    }
    let quantiles = record_quantiles(times, figures);
    for op in ["verify_presentation", "status_lookup", "verify_with_status"] {
        for q in ["p50", "p99"] {
            let baseline = quantiles[&("credential.baseline_ed25519_verify".to_owned(), q)];
            figures.add(
                format!("ratio_to_ed25519.credential_{op}.{q}"),
                quantiles[&(format!("credential.{op}"), q)] / baseline,
            );
        }
    }
    Ok(())
}

/// The sizes (2): derived proofs, signatures and public keys, in bytes.
fn sizes(member: &Member) -> Result<Value> {
    let signature = bbs::sign(&member.key, &member.header, &member.messages)?;
    let mut proofs = serde_json::Map::new();
    for (name, indexes) in DISCLOSED {
        let (proof, _) = member.derive(&signature, &[0; bbs::NONCE_BYTES], indexes)?;
        proofs.insert(format!("proof_{name}_bytes"), json!(proof.len()));
    }
    proofs.insert("signature_bytes".into(), json!(signature.len()));
    proofs.insert("public_key_bytes".into(), json!(bbs::PUBLIC_KEY_BYTES));
    Ok(json!({
        "bbs": proofs,
        "ed25519": {
            "signature_bytes": ed25519_dalek::SIGNATURE_LENGTH,
            "public_key_bytes": ed25519_dalek::PUBLIC_KEY_LENGTH,
        },
        "header_bytes": member.header.len(),
        "signed_octets_bytes": member.octets.len(),
    }))
}

/// What the end-to-end figures ask: the demo's lender asking `residence` (the country,
/// disclosed by bank-eu's BBS proof) about bank-eu's members.
const LENDER: RoundTrip = RoundTrip {
    run: "disclosure",
    tenant: TenantSetup {
        id: "lender",
        name: "disclosure bench lender",
        regions: &["eu"],
        rate: "1000000",
        burst: "1000000",
        policy: BANK_POLICY,
    },
    claim: "residence",
    params: &[],
    purpose: "kyc",
    jurisdiction: "DE",
    adults_only: false,
};

/// The end-to-end figures (3) of every run, into `figures`; each run's outcomes.
fn end_to_end(args: &DisclosureBenchArgs, repo: &str, figures: &mut Runs) -> Result<Vec<Value>> {
    each_run(&LENDER, &args.e2e, repo, args.runs, |_, run, [m, d]| {
        record_latency(figures, "disclosure", &d, &m);
        let moved = &d.moved;
        figures.add(
            "latency.disclosure.verified_by_psi",
            moved.disclosures_verified,
        );
        figures.add(
            "latency.disclosure.refused_by_psi",
            moved.disclosures_rejected,
        );
        eprintln!(
            "  [run {run}/{}] latency p50/p99: residence {:.0}/{:.0} ms ({}), membership {:.0}/{:.0} ms",
            args.runs,
            percentile(&d.latencies, 0.5),
            percentile(&d.latencies, 0.99),
            d.outcomes_line(),
            percentile(&m.latencies, 0.5),
            percentile(&m.latencies, 0.99),
        );
        Ok(json!({
            "run": run,
            "latency_disclosure": d.outcomes,
            "latency_membership": m.outcomes,
        }))
    })
}

pub fn disclosure(args: DisclosureBenchArgs) -> Result<ExitCode> {
    let repo = args
        .e2e
        .topology("the BBS and Ed25519 operations and sizes")?;
    let load_at_start = loadavg();
    let member = Member::new()?;
    let mut figures = Runs::default();
    println!(
        "(1, 2) BBS and Ed25519 in this process, one thread: {} runs of {} operations of each kind over {} attributes ({} octets)",
        args.runs,
        args.ops,
        NAMES.len(),
        member.octets.len()
    );
    for run in 1..=args.runs {
        eprintln!("  [run {run}/{}] operations", args.runs);
        operations(&member, run, args.ops as usize, &mut figures)?;
        credential_checks(&member, args.ops as usize, &mut figures)?;
    }
    let sizes = sizes(&member)?;
    let outcomes = match &repo {
        None => None,
        Some(repo) => {
            println!(
                "(3) end to end on the broker at {}: latency at {}/s",
                args.e2e.cluster.bootstrap, args.e2e.rate
            );
            Some(end_to_end(&args, repo, &mut figures)?)
        }
    };

    let f = &figures;
    println!("\nmedian (min–max) over {} runs", args.runs);
    let ops = [
        ("bbs.sign", "sign"),
        ("bbs.verify_signature", "verify the signature"),
        ("bbs.derive_1_of_10", "derive a proof disclosing 1 of 10"),
        ("bbs.derive_5_of_10", "derive a proof disclosing 5 of 10"),
        (
            "bbs.verify_proof_1_of_10",
            "verify a proof disclosing 1 of 10",
        ),
        (
            "bbs.verify_proof_5_of_10",
            "verify a proof disclosing 5 of 10",
        ),
    ];
    let mut rows = vec![(
        "BBS over 10 attributes (BLS12-381-SHA-256), µs per operation:".to_owned(),
        String::new(),
        0,
    )];
    for (op, what) in ops {
        rows.push((format!("{what}, p50"), format!("{op}.{{q}}_us"), 0));
    }
    rows.push((
        "Ed25519 over the same octets (the baseline), µs per operation:".to_owned(),
        String::new(),
        0,
    ));
    rows.push(("sign, p50".to_owned(), "ed25519.sign.{q}_us".to_owned(), 1));
    rows.push((
        "verify, p50".to_owned(),
        "ed25519.verify.{q}_us".to_owned(),
        1,
    ));
    rows.push((
        "BBS ÷ Ed25519 (sign and derive ÷ sign, verify ÷ verify):".to_owned(),
        String::new(),
        0,
    ));
    for (op, what) in ops {
        let name = op.replace("bbs.", "ratio_to_ed25519.");
        rows.push((format!("{what}, p50"), format!("{name}.{{q}}"), 1));
    }
    rows.push((
        "(4) SD-JWT VC with the country disclosed, as psi checks it, µs:".to_owned(),
        String::new(),
        0,
    ));
    for (op, what) in [
        ("verify_presentation", "verify the presentation, p50"),
        (
            "status_lookup",
            "verify the status list and read the bit, p50",
        ),
        ("verify_with_status", "both, p50"),
        (
            "baseline_ed25519_verify",
            "Ed25519 verify (the baseline), p50",
        ),
    ] {
        rows.push((what.to_owned(), format!("credential.{op}.{{q}}_us"), 1));
    }
    for op in ["verify_presentation", "status_lookup", "verify_with_status"] {
        rows.push((
            format!("{op} ÷ Ed25519 verify, p50"),
            format!("ratio_to_ed25519.credential_{op}.{{q}}"),
            1,
        ));
    }
    f.summary(&rows, str::to_owned);
    if outcomes.is_some() {
        f.summary(LATENCY_SUMMARY, |text| {
            text.replace("{rate}", &args.e2e.rate.to_string())
                .replace("{k}", "disclosure")
                .replace("{claim}", "residence by BBS disclosure")
        });
        f.summary(
            &[
                (
                    "disclosures verified by psi",
                    "latency.disclosure.verified_by_psi",
                    0,
                ),
                (
                    "disclosures refused by psi",
                    "latency.disclosure.refused_by_psi",
                    0,
                ),
            ],
            str::to_owned,
        );
    }
    println!(
        "sizes: BBS proof disclosing 1 of 10 {} B, 5 of 10 {} B; signature {} B, public key {} B; Ed25519 signature {} B, public key {} B",
        sizes["bbs"]["proof_1_of_10_bytes"],
        sizes["bbs"]["proof_5_of_10_bytes"],
        sizes["bbs"]["signature_bytes"],
        sizes["bbs"]["public_key_bytes"],
        sizes["ed25519"]["signature_bytes"],
        sizes["ed25519"]["public_key_bytes"],
    );

    let disclosed: BTreeMap<&str, Vec<&str>> = DISCLOSED
        .iter()
        .map(|(name, indexes)| (*name, indexes.iter().map(|&i| NAMES[i]).collect()))
        .collect();
    let result = json!({
        "benchmark": "disclosure",
        "runs": args.runs,
        "machine": { "threads": rayon::current_num_threads(), "loadavg_at_start": load_at_start, "loadavg_at_end": loadavg() },
        "settings": args.e2e.settings(json!({
            "ops_per_kind": args.ops,
            "attributes": NAMES,
            "disclosed": disclosed,
        })),
        "figures": figures.json(),
        "sizes": sizes,
        "outcomes": outcomes,
        "note": "each figure: median, min and max over the runs, and every run's value. bbs: pavilion_credentials::bbs (zkryptium 0.8, draft-irtf-cfrg-bbs-signatures, BLS12-381-SHA-256) over one member's 10 attributes, the header binding issuer, schema, names and expiry (pavilion.attributes.v1), a 32-byte presentation header per round (a request's nonce); on one thread, every kind once per round in turn; µs per operation, p50/p99 of the run's operations. derive_1_of_10 discloses the country (as the lender asks), derive_5_of_10 five attributes; verify_proof verifies that round's derived proof, as psi does. ed25519: ed25519-dalek signing, and verify_strict, the same octets (the header, then each value length-prefixed). ratio_to_ed25519: BBS sign and derive ÷ Ed25519 sign, BBS verify ÷ Ed25519 verify, at the same quantile. credential: an SD-JWT VC (pavilion_credentials::credential) over the same 10 attributes, presented with the country disclosed and a key binding; verify_presentation = issuer signature, disclosure digests, key binding, validity; status_lookup = the issuer's signed Bitstring Status List (131,072 bits, one in a thousand set, GZIP) verified, inflated and the credential's bit read, as psi does for every credential claim (no cache); verify_with_status = both; baseline = Ed25519 verify_strict of the 10 attributes' octets, same run. latency: the demo's lender policy (residence: oprf_match + bbs_disclosure, disclose [country]), one claim a request about bank-eu's members, paced; produce → decision visible read_committed; baseline = account_verified (evidence oprf_match) of the same tenant and subjects; legs from the CreateTime of the evidence request (written by psi in its transaction), the provider's answer and the decision; proving_mean_ms = the evidence service's histogram (its disclosure time: attribute book look-up and proof derivation over bank-eu's 2 signed attributes). Pipeline: tenancy + fused policy/psi/signing (no audit), one process; bank-eu's evidence service with one worker (the demo's setup); psi punctuates every 50 ms (topology.yaml). All on one 2-core machine with Kafka.",
    });
    write_result(&args.out, &result)?;
    Ok(ExitCode::SUCCESS)
}
