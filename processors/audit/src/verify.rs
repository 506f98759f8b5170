//! What an auditor does with `pavilion.audit.log` and `pavilion.audit.checkpoints`: replay
//! every origin's entries in order, recompute each leaf hash from the entry's fields and each
//! checkpoint's root from the leaves (ct-merkle, independently of the stage's frontier),
//! verify each checkpoint's note signature, and stop at the first divergence with the index
//! it is at and why.

use std::collections::BTreeMap;

use pavilion_schemas::{AuditEntry, Checkpoint, EventRef};

use crate::log::LogView;
use crate::note::{open, NoteKey};

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: entry {index}: {reason}")]
pub struct Divergence {
    /// Log origin.
    pub origin: String,
    /// Leaf index where the log stops being what it should be.
    pub index: u64,
    /// What is wrong.
    pub reason: String,
}

/// One origin, verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginReport {
    /// Entries replayed.
    pub entries: u64,
    /// Checkpoints whose signature and root verified.
    pub checkpoints: u64,
    /// The largest verified checkpoint: size and root.
    pub latest: Option<(u64, [u8; 32])>,
}

/// A source event's digest, when the auditor can still read it (`None`: expired or not
/// looked up).
pub type EventLookup<'a> = dyn FnMut(&EventRef) -> Option<[u8; 32]> + 'a;

/// Replays the log. `entries` in log order (per origin); `progress` is called per entry.
pub fn verify(
    entries: impl IntoIterator<Item = AuditEntry>,
    checkpoints: &[Checkpoint],
    known: &[NoteKey],
    event_digest: &mut EventLookup<'_>,
    progress: &mut dyn FnMut(),
) -> Result<BTreeMap<String, OriginReport>, Divergence> {
    let mut by_origin: BTreeMap<String, Vec<&Checkpoint>> = BTreeMap::new();
    for c in checkpoints {
        by_origin.entry(c.origin.clone()).or_default().push(c);
    }
    for list in by_origin.values_mut() {
        list.sort_by_key(|c| c.tree_size);
        list.dedup_by_key(|c| c.tree_size);
    }
    // Every note must verify and say what its record says.
    for (origin, list) in &by_origin {
        for c in list {
            let fail = |reason: String| Divergence {
                origin: origin.clone(),
                index: c.tree_size.max(0) as u64,
                reason: format!("checkpoint at size {}: {reason}", c.tree_size),
            };
            let body = open(&c.note, known).map_err(|e| fail(e.to_string()))?;
            if body.origin != c.origin
                || body.size as i64 != c.tree_size
                || body.root.as_slice() != c.root_hash
            {
                return Err(fail(
                    "the signed note says something else than the record".into(),
                ));
            }
        }
    }

    let mut views: BTreeMap<String, (LogView, OriginReport)> = BTreeMap::new();
    for entry in entries {
        progress();
        let (view, report) = views.entry(entry.origin.clone()).or_default();
        let index = view.len();
        let fail = |reason: String| Divergence {
            origin: entry.origin.clone(),
            index,
            reason,
        };
        if entry.index as u64 != index {
            return Err(fail(if (entry.index as u64) > index {
                format!(
                    "missing, or out of order: the next entry in the log is {}",
                    entry.index
                )
            } else {
                format!("out of order: entry {} appears again here", entry.index)
            }));
        }
        if entry.computed_leaf_hash().as_slice() != entry.leaf_hash {
            return Err(fail(
                "altered: the leaf hash does not match the entry's fields".into(),
            ));
        }
        if let Some(digest) = event_digest(&entry.event) {
            if digest.as_slice() != entry.event_digest {
                return Err(fail(format!(
                    "the logged digest is not the digest of the event at {}/{}@{}",
                    entry.event.topic, entry.event.partition, entry.event.offset
                )));
            }
        }
        view.push(entry.leaf_input());
        report.entries += 1;
        let size = view.len();
        if let Some(c) = by_origin
            .get(&entry.origin)
            .and_then(|l| l.iter().find(|c| c.tree_size as u64 == size))
        {
            let root = view.root(size).expect("size is the view's length");
            if root.as_slice() != c.root_hash {
                let from = report.latest.map_or(0, |(s, _)| s);
                return Err(Divergence {
                    origin: entry.origin.clone(),
                    index: from,
                    reason: format!(
                        "the signed checkpoint at size {size} has another root than entries {from}..{size} give: one of them was altered, or the leaves were recomputed"
                    ),
                });
            }
            report.checkpoints += 1;
            report.latest = Some((size, root));
        }
    }
    // A checkpoint beyond the end: entries were removed from the tail.
    for (origin, list) in &by_origin {
        let have = views.get(origin).map_or(0, |(v, _)| v.len());
        if let Some(c) = list.iter().find(|c| c.tree_size as u64 > have) {
            return Err(Divergence {
                origin: origin.clone(),
                index: have,
                reason: format!(
                    "missing: a signed checkpoint covers {} entries, the log has {have}",
                    c.tree_size
                ),
            });
        }
    }
    Ok(views.into_iter().map(|(o, (_, r))| (o, r)).collect())
}
