//! The Merkle log's two halves. [`Frontier`]: what the stage keeps per shard to append and to
//! compute the RFC 6962 root in O(log n) — the roots of the perfect subtrees the leaves so far
//! decompose into, largest first. [`LogView`]: the whole log of one origin in memory, built
//! by readers from `pavilion.audit.log`; its proofs and roots come from `ct-merkle`, an
//! implementation independent of the frontier, so a reader that agrees with the stage's
//! checkpoints has checked the stage.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// SHA-256 as ct-merkle (digest 0.11) takes it.
pub type Hasher = sha2_11::Sha256;

/// RFC 6962 interior node: SHA-256(0x01 ‖ left ‖ right).
fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A shard's append state: size and the perfect-subtree roots, largest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    /// Leaves appended.
    pub size: u64,
    /// One root per set bit of `size`, from the highest bit down (hex, for the JSON store).
    #[serde(with = "hex_hashes")]
    pub subtrees: Vec<[u8; 32]>,
}

impl Frontier {
    /// Appends a leaf hash.
    pub fn append(&mut self, leaf_hash: [u8; 32]) {
        let mut carry = leaf_hash;
        // Each trailing one bit of the old size is a subtree of the new leaf's size: merge.
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.subtrees.pop().expect("one subtree per set bit");
            carry = node(&left, &carry);
            size >>= 1;
        }
        self.subtrees.push(carry);
        self.size += 1;
    }

    /// RFC 6962 Merkle tree hash of the leaves so far (SHA-256 of nothing when empty): the
    /// subtrees folded from the right, as MTH splits at the largest power of two.
    pub fn root(&self) -> [u8; 32] {
        let mut subtrees = self.subtrees.iter().rev();
        let Some(last) = subtrees.next() else {
            return Sha256::digest(b"").into();
        };
        subtrees.fold(*last, |right, left| node(left, &right))
    }
}

mod hex_hashes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let strings = Vec::<String>::deserialize(d)?;
        strings
            .iter()
            .map(|s| {
                hex::decode(s)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| serde::de::Error::custom("not a 32-byte hex hash"))
            })
            .collect()
    }
}

/// One origin's log in memory: leaf inputs in order, proofs from `ct-merkle`.
#[derive(Default)]
pub struct LogView {
    tree: MemoryBackedTree<Hasher, Vec<u8>>,
}

/// A proof or root a reader asked for cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    /// Sizes out of range.
    #[error("the log has {have} entries; {what} needs {need}")]
    OutOfRange {
        /// What was asked.
        what: &'static str,
        /// Entries needed.
        need: u64,
        /// Entries there.
        have: u64,
    },
}

impl LogView {
    /// Appends the next leaf input.
    pub fn push(&mut self, leaf_input: Vec<u8>) {
        self.tree.push(leaf_input);
    }

    /// Entries.
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The first `size` leaves as a tree of their own (proofs are against a checkpoint's size,
    /// which may be smaller than what has been read).
    fn prefix(&self, size: u64) -> MemoryBackedTree<Hasher, Vec<u8>> {
        let mut tree = MemoryBackedTree::new();
        for leaf in &self.tree.items()[..size as usize] {
            tree.push(leaf.clone());
        }
        tree
    }

    fn check(&self, what: &'static str, need: u64) -> Result<(), ProofError> {
        if need > self.len() {
            return Err(ProofError::OutOfRange {
                what,
                need,
                have: self.len(),
            });
        }
        Ok(())
    }

    /// Root of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<[u8; 32], ProofError> {
        self.check("a root", size)?;
        let root = if size == self.len() {
            self.tree.root()
        } else {
            self.prefix(size).root()
        };
        Ok((*root.as_bytes()).into())
    }

    /// Inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion(&self, index: u64, size: u64) -> Result<Vec<[u8; 32]>, ProofError> {
        self.check("an inclusion proof", size)?;
        if index >= size {
            return Err(ProofError::OutOfRange {
                what: "an inclusion proof",
                need: index + 1,
                have: size,
            });
        }
        let proof = if size == self.len() {
            self.tree.prove_inclusion(index as usize)
        } else {
            self.prefix(size).prove_inclusion(index as usize)
        };
        Ok(split(proof.as_bytes()))
    }

    /// Consistency proof from the first `from` leaves to the first `to`.
    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<[u8; 32]>, ProofError> {
        self.check("a consistency proof", to)?;
        if from == 0 || from > to {
            return Err(ProofError::OutOfRange {
                what: "a consistency proof (0 < from <= to)",
                need: from,
                have: to,
            });
        }
        if from == to {
            return Ok(Vec::new());
        }
        let additions = (to - from) as usize;
        let proof = if to == self.len() {
            self.tree.prove_consistency(additions)
        } else {
            self.prefix(to).prove_consistency(additions)
        };
        Ok(split(proof.as_bytes()))
    }
}

fn split(bytes: &[u8]) -> Vec<[u8; 32]> {
    bytes
        .chunks(32)
        .map(|c| c.try_into().expect("SHA-256 sized"))
        .collect()
}

fn root_hash(root: &[u8; 32], size: u64) -> RootHash<Hasher> {
    RootHash::new((*root).into(), size)
}

fn join(proof: &[[u8; 32]]) -> Vec<u8> {
    proof.concat()
}

/// Checks an inclusion proof of `leaf_input` at `index` against a root of `size` leaves.
pub fn verify_inclusion(
    leaf_input: &[u8],
    index: u64,
    size: u64,
    root: &[u8; 32],
    proof: &[[u8; 32]],
) -> bool {
    root_hash(root, size)
        .verify_inclusion(
            &leaf_input.to_vec(),
            index,
            &InclusionProof::from_bytes(join(proof)),
        )
        .is_ok()
}

/// Checks that the tree of `from` leaves with root `old` is a prefix of the one of `to`
/// leaves with root `new`.
pub fn verify_consistency(
    from: u64,
    old: &[u8; 32],
    to: u64,
    new: &[u8; 32],
    proof: &[[u8; 32]],
) -> bool {
    if from == to {
        return old == new && proof.is_empty();
    }
    let Ok(proof) = ConsistencyProof::try_from_bytes(join(proof)) else {
        return false;
    };
    root_hash(new, to)
        .verify_consistency(&root_hash(old, from), &proof)
        .is_ok()
}
