//! An RFC 6962 (Certificate Transparency) Merkle tree over the journal, and its proofs.
//!
//! Why a Merkle tree rather than one more hash chain: a signed root of size `n` commits to
//! the first `n` events in position order, so deleting the tail, a whole stream or a
//! middle event changes the root; and two properties can be proven in `O(log n)` hashes
//! without handing over the journal:
//! - *inclusion*: this event is leaf `m` of the tree whose signed root is `r`;
//! - *consistency*: the tree of size `n` extends the tree of size `m` (nothing in the
//!   first `m` leaves changed since an older checkpoint was signed).
//!
//! Hashes are RFC 6962's: `leaf = SHA-256(0x00 ‖ data)`, `node = SHA-256(0x01 ‖ left ‖
//! right)`, the tree of `n > 1` leaves splits at the largest power of two below `n`. The
//! proof checks follow RFC 9162 §2.1.3.2 and §2.1.4.2, so any CT tool can check them too.
//!
//! [`Frontier`] keeps only the roots of the perfect subtrees that make up the tree (at
//! most 64 hashes), which is all that appending and computing the root need.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH(D[n]) of RFC 6962 over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The tree's right edge: roots of its perfect subtrees, largest (leftmost) first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(height, hash)`; heights strictly decrease, matching the set bits of `size`.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash, merging equal-height subtrees as binary addition carries.
    pub fn push(&mut self, leaf: Hash) {
        let mut carry = (0_u32, leaf);
        while let Some(&(height, left)) = self.peaks.last() {
            if height != carry.0 {
                break;
            }
            self.peaks.pop();
            carry = (height + 1, node_hash(&left, &carry.1));
        }
        self.peaks.push(carry);
        self.size += 1;
    }

    /// MTH of every leaf pushed so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, mut acc)) = peaks.next() else {
            return empty_root();
        };
        for (_, left) in peaks {
            acc = node_hash(left, &acc);
        }
        acc
    }

    /// The peaks as hex, for storage.
    pub fn to_hex(&self) -> Vec<String> {
        self.peaks
            .iter()
            .map(|(_, hash)| hex::encode(hash))
            .collect()
    }

    /// Rebuilds a frontier of `size` leaves from [`Frontier::to_hex`].
    pub fn from_hex(size: u64, peaks: &[String]) -> Result<Self, String> {
        let heights: Vec<u32> = (0..64).rev().filter(|bit| size >> bit & 1 == 1).collect();
        if heights.len() != peaks.len() {
            return Err(format!(
                "a tree of {size} leaves has {} subtrees, not {}",
                heights.len(),
                peaks.len()
            ));
        }
        let peaks = heights
            .into_iter()
            .zip(peaks)
            .map(|(height, text)| Ok((height, parse_hash(text)?)))
            .collect::<Result<_, String>>()?;
        Ok(Frontier { size, peaks })
    }
}

/// Reads a hex SHA-256 digest.
pub fn parse_hash(text: &str) -> Result<Hash, String> {
    let bytes = hex::decode(text).map_err(|error| format!("{text:?} is not hex: {error}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{text:?} is not a 32-byte SHA-256 digest"))
}

/// PATH(m, D[n]): the audit path proving that leaf `index` is in the tree of `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Vec<Hash> {
    assert!(index < leaves.len(), "leaf {index} is outside the tree");
    let mut path = Vec::new();
    inclusion_path(leaves, index, &mut path);
    path
}

fn inclusion_path(leaves: &[Hash], index: usize, path: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if index < k {
        inclusion_path(&leaves[..k], index, path);
        path.push(root(&leaves[k..]));
    } else {
        inclusion_path(&leaves[k..], index - k, path);
        path.push(root(&leaves[..k]));
    }
}

/// PROOF(m, D[n]): proves that the tree of the first `old_size` leaves is a prefix of
/// the tree of all `leaves`.
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Vec<Hash> {
    assert!(
        0 < old_size && old_size <= leaves.len(),
        "old size {old_size} must be within 1..={}",
        leaves.len()
    );
    let mut proof = Vec::new();
    subproof(old_size, leaves, true, &mut proof);
    proof
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            proof.push(root(leaves));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, proof);
        proof.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, proof);
        proof.push(root(&leaves[..k]));
    }
}

/// RFC 9162 §2.1.3.2: does `path` prove `leaf` at `index` in a tree of `size` with `root`?
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: does `proof` show that the tree (`old_size`, `old_root`) is a
/// prefix of the tree (`new_size`, `new_root`)?
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old_size.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *old_root && sr == *new_root && snode == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn known_roots_match_rfc_6962_shapes() {
        let l = leaves(3);
        assert_eq!(root(&[]), empty_root());
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        // The empty tree's root is SHA-256 of the empty string (RFC 6962 §2.1).
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn frontier_round_trips_through_hex() {
        let mut frontier = Frontier::default();
        for leaf in leaves(11) {
            frontier.push(leaf);
        }
        let back = Frontier::from_hex(11, &frontier.to_hex()).unwrap();
        assert_eq!(back, frontier);
        assert!(Frontier::from_hex(12, &frontier.to_hex()).is_err());
    }

    proptest! {
        #[test]
        fn frontier_root_equals_the_recursive_root(n in 0_usize..300) {
            let all = leaves(n);
            let mut frontier = Frontier::default();
            for leaf in &all {
                frontier.push(*leaf);
            }
            prop_assert_eq!(frontier.root(), root(&all));
        }

        #[test]
        fn inclusion_proofs_verify_and_fail_when_tampered(
            n in 1_usize..200, pick in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()
        ) {
            let all = leaves(n);
            let index = pick.index(n);
            let r = root(&all);
            let path = inclusion_proof(&all, index);
            prop_assert!(verify_inclusion(index as u64, n as u64, &all[index], &path, &r));
            // Another leaf, another index, a changed path element or another root fails.
            let other = leaf_hash(b"forged");
            prop_assert!(!verify_inclusion(index as u64, n as u64, &other, &path, &r));
            if n > 1 {
                let wrong = (index + 1) % n;
                prop_assert!(!verify_inclusion(wrong as u64, n as u64, &all[index], &path, &r));
                let mut bent = path.clone();
                let at = flip.index(bent.len());
                bent[at][0] ^= 1;
                prop_assert!(!verify_inclusion(index as u64, n as u64, &all[index], &bent, &r));
            }
            let mut tampered = all.clone();
            tampered[flip.index(n)] = other;
            let tampered_root = root(&tampered);
            prop_assert!(!verify_inclusion(index as u64, n as u64, &all[index], &path, &tampered_root));
        }

        #[test]
        fn consistency_proofs_verify_and_fail_when_history_changed(
            n in 1_usize..200, old in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()
        ) {
            let all = leaves(n);
            let m = old.index(n) + 1;
            let (old_root, new_root) = (root(&all[..m]), root(&all));
            let proof = consistency_proof(&all, m);
            prop_assert!(verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof));
            // Rewriting any leaf of the old tree breaks consistency with the old root.
            let mut rewritten = all.clone();
            let at = flip.index(m);
            rewritten[at] = leaf_hash(b"rewritten");
            let rewritten_proof = consistency_proof(&rewritten, m);
            prop_assert!(!verify_consistency(
                m as u64, n as u64, &old_root, &root(&rewritten), &rewritten_proof
            ));
            if m < n {
                let mut bent = proof.clone();
                let at = flip.index(bent.len());
                bent[at][0] ^= 1;
                prop_assert!(!verify_consistency(m as u64, n as u64, &old_root, &new_root, &bent));
            }
        }
    }
}
