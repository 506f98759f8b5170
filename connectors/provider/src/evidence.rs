//! The provider's evidence service, without its transport: answering a broker's
//! [`EvidenceRequest`] with a Groth16 proof that the member's committed attribute satisfies the
//! predicate, or with a BBS proof disclosing the attributes asked for and nothing else; and the
//! service's metrics and health.
//!
//! The service finds the member by the set key it computed itself at load time; the request
//! carries no tenant, no request id and no claim. What the provider learns from a request:
//! that one of its members is being asked about, which predicate and bound, and when.
//! [`parse_request`] reads what a request asks (circuit, set key, bound, nonce) before the
//! book is looked at.
//!
//! Proving is CPU-bound (about 30 ms a proof on one core, `pavilion bench zk`): one [`Provers`] per worker thread,
//! each with its circuits' witness generators compiled once.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use pavilion_credentials::bbs::{self, DISCLOSURE_EVIDENCE};
use pavilion_schemas::{
    BbsDisclosure, DisclosedAttribute, EvidenceRequest, EvidenceResponse, EvidenceStatus,
};
use pavilion_zk::{
    field_from_bytes, subject_binding, ArtifactError, AttributeType, Circuit, Fr, Prover,
    WitnessInputs,
};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::attributes::{AttributeBook, DiscloseError};

/// One worker's provers, a loaded circuit each.
pub struct Provers(Vec<Prover>);

impl Provers {
    /// Loads every circuit (compiling its witness generator takes a second or two).
    pub fn load() -> Result<Provers, ArtifactError> {
        Circuit::ALL
            .into_iter()
            .map(Prover::new)
            .collect::<Result<_, _>>()
            .map(Provers)
    }

    fn of(&mut self, circuit: Circuit) -> &mut Prover {
        self.0
            .iter_mut()
            .find(|p| p.circuit() == circuit)
            .expect("one prover per circuit")
    }
}

/// The service's metrics, on its own registry (served at `/metrics`).
pub struct EvidenceMetrics {
    registry: Registry,
    /// `pavilion_evidence_answers_total{circuit, status}`.
    pub answers: IntCounterVec,
    /// `pavilion_evidence_proving_seconds{circuit}`.
    pub proving_seconds: HistogramVec,
    /// `pavilion_evidence_queue_depth`: requests read and not yet answered.
    pub queue_depth: IntGauge,
    /// `pavilion_evidence_expired_total`: requests past their deadline, skipped.
    pub expired: IntCounter,
    /// `pavilion_evidence_repeated_total`: retries of a question being proved or answered
    /// lately, answered without proving again.
    pub repeated: IntCounter,
}

impl EvidenceMetrics {
    fn new() -> Self {
        let registry = Registry::new();
        let answers = IntCounterVec::new(
            Opts::new(
                "pavilion_evidence_answers_total",
                "Proof requests answered, by circuit and status (proved, does_not_hold, …).",
            ),
            &["circuit", "status"],
        )
        .expect("valid metric");
        let proving_seconds = HistogramVec::new(
            HistogramOpts::new(
                "pavilion_evidence_proving_seconds",
                "Time to prove one predicate (witness and Groth16).",
            )
            .buckets(vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0]),
            &["circuit"],
        )
        .expect("valid metric");
        let queue_depth = IntGauge::new(
            "pavilion_evidence_queue_depth",
            "Proof requests read from Kafka and not yet answered.",
        )
        .expect("valid metric");
        let expired = IntCounter::new(
            "pavilion_evidence_expired_total",
            "Proof requests skipped because their deadline had passed.",
        )
        .expect("valid metric");
        let repeated = IntCounter::new(
            "pavilion_evidence_repeated_total",
            "Retried proof requests answered without proving again (in flight, or answered lately).",
        )
        .expect("valid metric");
        crate::metrics::register(
            &registry,
            [
                Box::new(answers.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(proving_seconds.clone()),
                Box::new(queue_depth.clone()),
                Box::new(expired.clone()),
                Box::new(repeated.clone()),
            ],
        );
        EvidenceMetrics {
            registry,
            answers,
            proving_seconds,
            queue_depth,
            expired,
            repeated,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        crate::metrics::render(&self.registry)
    }
}

/// What a proof request asks, read and checked: the broker's request is untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    /// The predicate's circuit.
    pub circuit: Circuit,
    /// The member, by the set key the provider computed at load time.
    pub set_key: [u8; 32],
    /// The predicate's bound.
    pub bound: u64,
    /// The nonce binding the proof to the broker's request, a canonical field element.
    pub nonce: Fr,
}

/// Reads a proof request's fields, or says (naming no value) why it cannot be answered.
pub fn parse_request(request: &EvidenceRequest) -> Result<Question, &'static str> {
    let circuit = Circuit::from_id(&request.circuit).ok_or("unknown circuit")?;
    let set_key = request
        .set_key
        .as_slice()
        .try_into()
        .map_err(|_| "set key is not 32 bytes")?;
    let nonce = field_from_bytes(&request.nonce).map_err(|_| "malformed nonce")?;
    let bound = u64::try_from(request.bound).map_err(|_| "negative bound")?;
    Ok(Question {
        circuit,
        set_key,
        bound,
        nonce,
    })
}

/// What a disclosure request asks, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclosureQuestion {
    /// The member.
    pub set_key: [u8; 32],
    /// The attributes to reveal (1 to 64 distinct names).
    pub names: Vec<String>,
    /// The presentation header: the broker's nonce.
    pub nonce: [u8; bbs::NONCE_BYTES],
}

/// Reads a disclosure request's fields, or says (naming no value) why it cannot be answered.
pub fn parse_disclosure_request(
    request: &EvidenceRequest,
) -> Result<DisclosureQuestion, &'static str> {
    if request.circuit != DISCLOSURE_EVIDENCE {
        return Err("not a disclosure request");
    }
    let set_key = request
        .set_key
        .as_slice()
        .try_into()
        .map_err(|_| "set key is not 32 bytes")?;
    let nonce = request
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| "nonce is not 32 bytes")?;
    let names = &request.disclose;
    if names.is_empty() || names.len() > bbs::MAX_MESSAGES {
        return Err("1 to 64 attributes may be disclosed");
    }
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() || name.len() > 64 || names[..i].contains(name) {
            return Err("malformed or repeated attribute name");
        }
    }
    Ok(DisclosureQuestion {
        set_key,
        names: names.clone(),
        nonce,
    })
}

/// Answers proof requests from the provider's attribute book.
pub struct EvidenceProver {
    provider_id: String,
    book: RwLock<Arc<AttributeBook>>,
    /// The BBS key the book's attribute sets are signed with, for disclosures.
    bbs: Option<bbs::SigningKey>,
    /// The service's metrics.
    pub metrics: EvidenceMetrics,
}

impl EvidenceProver {
    /// A prover over `book`; `bbs` is the key its attributes were signed with (without it,
    /// disclosure requests fail).
    pub fn new(book: AttributeBook, bbs: Option<bbs::SigningKey>) -> Self {
        EvidenceProver {
            provider_id: book.provider_id().to_owned(),
            book: RwLock::new(Arc::new(book)),
            bbs,
            metrics: EvidenceMetrics::new(),
        }
    }

    /// Replaces the book (after a new load).
    pub fn replace_book(&self, book: AttributeBook) {
        *self.book.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(book);
    }

    fn book(&self) -> Arc<AttributeBook> {
        self.book.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The answer to one request. Never fails: what cannot be proved is an answer too.
    pub fn answer(
        &self,
        provers: &mut Provers,
        request: &EvidenceRequest,
        now_ms: i64,
    ) -> EvidenceResponse {
        let started = Instant::now();
        let mut disclosure = None;
        let (status, proof, detail) = if request.circuit == DISCLOSURE_EVIDENCE {
            match self.disclose(request, now_ms) {
                Ok(d) => {
                    disclosure = Some(d);
                    (EvidenceStatus::Proved, None, None)
                }
                Err((status, detail)) => (status, None, Some(detail.to_owned())),
            }
        } else {
            match self.prove(provers, request) {
                Ok(proof) => (EvidenceStatus::Proved, Some(proof), None),
                Err((status, detail)) => (status, None, Some(detail.to_owned())),
            }
        };
        let status_name = match status {
            EvidenceStatus::Proved => "proved",
            EvidenceStatus::DoesNotHold => "does_not_hold",
            EvidenceStatus::UnknownSubject => "unknown_subject",
            EvidenceStatus::NoAttribute => "no_attribute",
            EvidenceStatus::Failed | EvidenceStatus::Unknown => "failed",
        };
        let circuit = match Circuit::from_id(&request.circuit) {
            Some(c) => c.id(),
            None if request.circuit == DISCLOSURE_EVIDENCE => DISCLOSURE_EVIDENCE,
            None => "unknown",
        };
        self.metrics
            .answers
            .with_label_values(&[circuit, status_name])
            .inc();
        let elapsed = started.elapsed();
        if status == EvidenceStatus::Proved {
            self.metrics
                .proving_seconds
                .with_label_values(&[circuit])
                .observe(elapsed.as_secs_f64());
        }
        EvidenceResponse {
            provider_id: self.provider_id.clone(),
            set_key: request.set_key.clone(),
            circuit: request.circuit.clone(),
            bound: request.bound,
            nonce: request.nonce.clone(),
            status,
            proof,
            detail,
            proved_at: now_ms,
            proving_ms: elapsed.as_millis() as i64,
            disclosure,
        }
    }

    /// The disclosure, or the status and a reason that names no value.
    fn disclose(
        &self,
        request: &EvidenceRequest,
        now_ms: i64,
    ) -> Result<BbsDisclosure, (EvidenceStatus, &'static str)> {
        let failed = |why| (EvidenceStatus::Failed, why);
        let q = parse_disclosure_request(request).map_err(failed)?;
        let key = self.bbs.as_ref().ok_or(failed("no BBS key"))?;
        let names: Vec<&str> = q.names.iter().map(String::as_str).collect();
        let d = self
            .book()
            .disclose(key, &q.set_key, &names, &q.nonce, now_ms)
            .map_err(|e| match e {
                DiscloseError::UnknownSubject => (EvidenceStatus::UnknownSubject, "no such member"),
                DiscloseError::NoAttribute(_) => (
                    EvidenceStatus::NoAttribute,
                    "no such attribute for the member",
                ),
                DiscloseError::NotSigned => failed("the attributes are not signed"),
                DiscloseError::Expired(_) => failed("the signed attributes expired"),
                DiscloseError::Bbs(_) => failed("deriving the proof failed"),
            })?;
        Ok(BbsDisclosure {
            header: d.header,
            presentation_header: q.nonce.to_vec(),
            disclosed: d
                .disclosed
                .into_iter()
                .map(|(index, name, value)| DisclosedAttribute {
                    index: index as i32,
                    name,
                    value,
                })
                .collect(),
            proof: d.proof,
            public_key: key.public_key().to_bytes().to_vec(),
        })
    }

    /// The proof, or the status and a reason that names no value.
    fn prove(
        &self,
        provers: &mut Provers,
        request: &EvidenceRequest,
    ) -> Result<Vec<u8>, (EvidenceStatus, &'static str)> {
        let failed = |why| (EvidenceStatus::Failed, why);
        let Question {
            circuit,
            set_key,
            bound,
            nonce,
        } = parse_request(request).map_err(failed)?;
        let book = self.book();
        let Some(opening) = book.opening(&set_key, &request.attribute) else {
            return Err(if book.has_member(&set_key) {
                (
                    EvidenceStatus::NoAttribute,
                    "no such attribute for the member",
                )
            } else {
                (EvidenceStatus::UnknownSubject, "no such member")
            });
        };
        if !circuit.holds(opening.value, bound) {
            return Err((EvidenceStatus::DoesNotHold, "the predicate does not hold"));
        }
        let inputs = WitnessInputs {
            attribute: opening.value,
            attribute_type: AttributeType::named(&request.attribute),
            subject_binding: subject_binding(&set_key),
            salt: opening.salt().map_err(|_| failed("unreadable salt"))?,
            bound,
            nonce,
        };
        provers
            .of(circuit)
            .prove(&inputs, &mut pavilion_zk::rand::OsRng)
            .map(|proof| proof.to_bytes())
            .map_err(|_| failed("proving failed"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use pavilion_zk::{field_to_bytes, nonce_from_request_id, verify, Proof, PublicInputs};

    use super::*;
    use crate::attributes::AttributeSpec;

    fn value(spec: &str, cell: &str) -> crate::attributes::AttributeValue {
        crate::attributes::AttributeSpec::parse(spec)
            .unwrap()
            .value(cell)
            .unwrap()
    }

    #[test]
    fn proves_what_holds_and_says_why_not_otherwise() {
        let key = [9u8; 32];
        let values = HashMap::from([(
            key,
            BTreeMap::from([(
                "birthdate".to_owned(),
                value("birthdate:date", "2000-01-01"),
            )]),
        )]);
        let book = AttributeBook::reloaded("registry", &values, None);
        let commitment = book
            .opening(&key, "birthdate")
            .unwrap()
            .commitment("birthdate", &key)
            .unwrap();
        let service = EvidenceProver::new(book, None);
        let mut provers = Provers::load().unwrap();
        let nonce = nonce_from_request_id(b"r1");
        let request = |bound: i64, set_key: [u8; 32], attribute: &str| EvidenceRequest {
            set_key: set_key.to_vec(),
            circuit: "date_le_cutoff".into(),
            attribute: attribute.into(),
            bound,
            nonce: field_to_bytes(nonce).to_vec(),
            reply_partition: 0,
            attempt: 1,
            deadline: 0,
            disclose: Vec::new(),
        };

        let answer = service.answer(&mut provers, &request(20000101, key, "birthdate"), 1);
        assert_eq!(
            answer.status,
            EvidenceStatus::Proved,
            "born on the cutoff day"
        );
        let proof = Proof::from_bytes(answer.proof.as_deref().unwrap()).unwrap();
        let inputs = PublicInputs {
            commitment: field_from_bytes(&commitment).unwrap(),
            bound: 20000101,
            nonce,
        };
        verify(Circuit::DateLeCutoff, &inputs, &proof).unwrap();

        let cases = [
            (
                request(19991231, key, "birthdate"),
                EvidenceStatus::DoesNotHold,
            ),
            (
                request(20000101, [1; 32], "birthdate"),
                EvidenceStatus::UnknownSubject,
            ),
            (
                request(20000101, key, "income"),
                EvidenceStatus::NoAttribute,
            ),
        ];
        for (request, status) in cases {
            let answer = service.answer(&mut provers, &request, 1);
            assert_eq!(answer.status, status);
            assert!(answer.proof.is_none());
            assert!(
                !answer.detail.unwrap().contains("2000"),
                "no value in a reason"
            );
        }
        // An income, with the other circuit.
        let income_key = [5u8; 32];
        let values = HashMap::from([(
            income_key,
            BTreeMap::from([("income".to_owned(), value("income:int", "73415297"))]),
        )]);
        service.replace_book(AttributeBook::reloaded("registry", &values, None));
        let mut income = request(50_000_000, income_key, "income");
        income.circuit = "int_ge_threshold".into();
        let answer = service.answer(&mut provers, &income, 1);
        assert_eq!(answer.status, EvidenceStatus::Proved, "{:?}", answer.detail);
        let metrics = service.metrics.render();
        assert!(
            metrics.contains(
                "pavilion_evidence_answers_total{circuit=\"date_le_cutoff\",status=\"proved\"} 1"
            ),
            "{metrics}"
        );
    }

    #[test]
    fn discloses_what_is_asked_and_says_why_not_otherwise() {
        let member = [4u8; 32];
        let specs = ["birthdate:date", "country:text"].map(|s| AttributeSpec::parse(s).unwrap());
        let values = HashMap::from([(
            member,
            BTreeMap::from([
                (
                    "birthdate".to_owned(),
                    specs[0].value("1990-04-01").unwrap(),
                ),
                ("country".to_owned(), specs[1].value("DE").unwrap()),
            ]),
        )]);
        let key = bbs::SigningKey::generate().unwrap();
        let mut book = AttributeBook::reloaded("bank", &values, None);
        let names = ["birthdate".to_owned(), "country".to_owned()];
        book.sign(&key, &names, &values, i64::MAX, &|_| {}).unwrap();
        let public = key.public_key().clone();
        let service = EvidenceProver::new(book, Some(key));
        let mut provers = Provers(Vec::new());
        let ask = |set_key: [u8; 32], disclose: &[&str]| EvidenceRequest {
            set_key: set_key.to_vec(),
            circuit: DISCLOSURE_EVIDENCE.into(),
            attribute: String::new(),
            bound: 0,
            nonce: vec![6; 32],
            reply_partition: 0,
            attempt: 1,
            deadline: 0,
            disclose: disclose.iter().map(|d| d.to_string()).collect(),
        };

        let answer = service.answer(&mut provers, &ask(member, &["country"]), 1);
        assert_eq!(answer.status, EvidenceStatus::Proved);
        let d = answer.disclosure.expect("a disclosure");
        assert_eq!(
            d.disclosed,
            vec![DisclosedAttribute {
                index: 1,
                name: "country".into(),
                value: "DE".into()
            }]
        );
        assert_eq!(d.public_key, public.to_bytes().to_vec());
        let checked = bbs::Disclosure {
            header: d.header.clone(),
            disclosed: vec![(1, "country".into(), "DE".into())],
            proof: d.proof.clone(),
        };
        checked.verify(&public, &[6; 32]).unwrap();
        let encoded = format!("{d:?}");
        assert!(!encoded.contains("1990"), "the birth date is not disclosed");

        for (request, status) in [
            (ask([5; 32], &["country"]), EvidenceStatus::UnknownSubject),
            (ask(member, &["shoe_size"]), EvidenceStatus::NoAttribute),
            (ask(member, &[]), EvidenceStatus::Failed),
            (ask(member, &["country", "country"]), EvidenceStatus::Failed),
        ] {
            let answer = service.answer(&mut provers, &request, 1);
            assert_eq!(answer.status, status, "{:?}", request.disclose);
            assert!(answer.disclosure.is_none());
        }
        let mut short_nonce = ask(member, &["country"]);
        short_nonce.nonce = vec![1; 31];
        assert_eq!(
            service.answer(&mut provers, &short_nonce, 1).status,
            EvidenceStatus::Failed
        );
        let without_key = EvidenceProver::new(AttributeBook::new("bank"), None);
        assert_eq!(
            without_key
                .answer(&mut provers, &ask(member, &["country"]), 1)
                .status,
            EvidenceStatus::Failed
        );
    }
}
