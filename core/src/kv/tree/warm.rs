//! Warming the paths of a group of lookups before they run.
//!
//! In a map far larger than the CPU's caches a lookup is a chain of cache misses, each needed
//! to know where the next one is (root → branches → leaf → the entry's block): replaying a
//! restart's log tail onto 1M keys spent ≈ 60 % of its time in the tree's descent (`perf`).
//! [`Tree::warm`] descends for a GROUP of keys level by level, and at each level first loads
//! a word of every key's next node before searching any of them. Those loads do not depend on
//! each other, so the CPU overlaps their misses; the searches, and the lookups that follow,
//! then find the nodes in cache. Nothing here changes the tree or any result: it only reads.

use std::hint::black_box;
use std::sync::Arc;

use smallvec::SmallVec;

use super::node::Node;
use super::Tree;
use crate::kv::Entry;

/// Keys warmed together at most: about as many misses as a core keeps in flight.
pub(crate) const WARM_GROUP_KEYS: usize = 16;

impl Node {
    /// Loads what a search of this node reads first: its reference counts (a write's
    /// `Arc::make_mut` reads them) and the fields its search starts with.
    fn touch(&self) {
        match self {
            Node::Leaf(leaf) => {
                black_box(Arc::strong_count(leaf));
                leaf.touch();
            }
            Node::Branch(branch) => {
                black_box(Arc::strong_count(branch));
                black_box(branch.separators.len());
            }
        }
    }

    /// Loads a branch's separator bytes (their own allocation, found through the branch).
    fn touch_separators(&self) {
        if let Node::Branch(branch) = self {
            branch.separators.touch();
        }
    }
}

/// Loads the head of `entry`'s block, where its key is.
fn touch_entry(entry: &Entry) {
    black_box(entry.key_bytes().first().copied());
}

impl Tree {
    /// Brings the paths to `keys` (at most [`WARM_GROUP_KEYS`] are used), and the blocks of the
    /// entries they probably end at, into the CPU's caches, one level at a time for all of them
    /// (see the module comment). The keys' order does not matter.
    pub(crate) fn warm(&self, keys: &[&[u8]]) {
        let keys = &keys[..keys.len().min(WARM_GROUP_KEYS)];
        let mut at: SmallVec<[&Node; WARM_GROUP_KEYS]> = keys.iter().map(|_| &self.root).collect();
        // Every leaf is at the same depth: the whole group reaches the leaves together.
        loop {
            at.iter().for_each(|node| node.touch());
            if !matches!(at.first(), Some(Node::Branch(_))) {
                break;
            }
            at.iter().for_each(|node| node.touch_separators());
            for (node, key) in at.iter_mut().zip(keys) {
                if let Node::Branch(branch) = node {
                    *node = &branch.children[branch.child_for(key)];
                }
            }
        }
        for (node, key) in at.iter().zip(keys) {
            if let Node::Leaf(leaf) = node {
                if let Some(i) = leaf.candidate(key) {
                    touch_entry(&leaf.entries()[i]);
                }
            }
        }
    }
}
