//! Building a tree bottom-up from entries in ascending key order (a decoded snapshot): full
//! leaves, then each level of branches over the one below, with no search and no copy.

use std::sync::Arc;

use smallvec::SmallVec;

use super::node::{rebalance, Branch, Leaf, Node, Rebalanced, BRANCH_CAPACITY, LEAF_CAPACITY};
use super::Tree;
use crate::kv::Entry;

/// Takes entries whose keys strictly ascend ([`SortedBuilder::push`]) and makes a tree of them
/// ([`SortedBuilder::finish`]). Leaves are filled as the entries come (the work per entry);
/// the branches, ~1/32 of the nodes, are built at the end.
#[derive(Default)]
pub(crate) struct SortedBuilder {
    /// Full leaves so far.
    leaves: Vec<Node>,
    /// The leaf being filled.
    leaf: SmallVec<[Entry; LEAF_CAPACITY]>,
    len: usize,
}

impl std::fmt::Debug for SortedBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SortedBuilder").field("len", &self.len).finish()
    }
}

impl SortedBuilder {
    /// Appends `entry`, whose key must sort after every key pushed so far (the caller checks:
    /// a snapshot decoder refuses keys out of order).
    pub(crate) fn push(&mut self, entry: Entry) {
        debug_assert!(
            self.leaf.last().or_else(|| self.last_full_entry()).is_none_or(|last| *last < entry),
            "keys pushed in ascending order"
        );
        self.leaf.push(entry);
        self.len += 1;
        if self.leaf.len() == LEAF_CAPACITY {
            let entries = std::mem::take(&mut self.leaf);
            self.leaves.push(Node::Leaf(Arc::new(Leaf::from_entries(entries))));
        }
    }

    fn last_full_entry(&self) -> Option<&Entry> {
        match self.leaves.last()? {
            Node::Leaf(leaf) => leaf.entries().last(),
            Node::Branch(_) => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn finish(mut self) -> Tree {
        if !self.leaf.is_empty() {
            let entries = std::mem::take(&mut self.leaf);
            self.leaves.push(Node::Leaf(Arc::new(Leaf::from_entries(entries))));
        }
        let mut level = self.leaves;
        even_out_last(&mut level);
        let root = loop {
            match level.len() {
                0 => break Node::Leaf(Arc::new(Leaf::default())),
                1 => break level.pop().expect("one node"),
                _ => level = branches_over(level),
            }
        };
        Tree { root, len: self.len }
    }
}

/// The last node of a level, the only one that may be below its minimum, refilled from the
/// one before it.
fn even_out_last(level: &mut Vec<Node>) {
    let n = level.len();
    if n < 2 || !level[n - 1].is_underfull() {
        return;
    }
    let right = level.pop().expect("two nodes");
    let left = level.pop().expect("two nodes");
    match rebalance(&left, right.first_key(), &right) {
        Rebalanced::One(node) => level.push(node),
        Rebalanced::Two(l, _, r) => level.extend([l, r]),
    }
}

/// One level of branches over `children`: as few as hold them, of sizes that differ by at
/// most one (so at least half full).
fn branches_over(children: Vec<Node>) -> Vec<Node> {
    let count = children.len().div_ceil(BRANCH_CAPACITY);
    let (base, extra) = (children.len() / count, children.len() % count);
    let mut children = children.into_iter();
    (0..count)
        .map(|i| {
            let size = base + usize::from(i < extra);
            let mut branch = Branch::default();
            for child in children.by_ref().take(size) {
                if !branch.children.is_empty() {
                    branch.separators.push(child.first_key());
                }
                branch.children.push(child);
            }
            Node::Branch(Arc::new(branch))
        })
        .collect()
}
