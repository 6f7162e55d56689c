//! The tree's nodes: leaves of entries and branches of children, each behind an `Arc` so that
//! a clone of the tree shares them and a write copies only the nodes on its path
//! (`Arc::make_mut`).
//!
//! Invariants (checked after every case by `check` in `tests.rs`):
//! - every leaf is at the same depth;
//! - a leaf ([`Leaf`]) holds 1..=[`LEAF_CAPACITY`] entries in ascending key order (an empty
//!   tree is one empty leaf), a branch 1..=[`BRANCH_CAPACITY`] children (a root branch at
//!   least two) and one separator fewer;
//! - a node that is not the last of its level holds at least [`LEAF_MIN`] entries or
//!   [`BRANCH_MIN`] children. The last ones (the root and the right edge below it) may hold
//!   fewer: keys put in ascending order fill the left node of every split there
//!   ([`split_point`]);
//! - separator `i` is greater than every key under children `..=i` and at most every key under
//!   children `i + 1..` (a B+tree: separators are copies of key bytes, not entries, so searching
//!   a branch reads the branch only, never an entry's block elsewhere in memory).

use std::cmp::Ordering;
use std::sync::Arc;

use smallvec::SmallVec;

pub(super) use super::leaf::{Leaf, LEAF_CAPACITY, LEAF_MIN};
use crate::kv::entry::compare_keys;

/// Children per branch at most.
pub(super) const BRANCH_CAPACITY: usize = 32;
/// A branch that is not the last of its level and has fewer children is merged with or
/// refilled from a neighbour.
pub(super) const BRANCH_MIN: usize = BRANCH_CAPACITY / 2;

/// A child: a leaf or a branch, shared between the versions of the tree that hold it.
#[derive(Clone)]
pub(super) enum Node {
    Leaf(Arc<Leaf>),
    Branch(Arc<Branch>),
}

/// Children and the separators between them (one fewer).
#[derive(Clone, Default)]
pub(super) struct Branch {
    pub(super) separators: Separators,
    pub(super) children: SmallVec<[Node; BRANCH_CAPACITY]>,
}

/// A branch's separator keys packed into one buffer: a search reads the branch's own memory
/// only.
#[derive(Clone, Default)]
pub(super) struct Separators {
    bytes: Vec<u8>,
    /// Where each separator ends in `bytes` (the next one starts there).
    ends: SmallVec<[u32; BRANCH_CAPACITY]>,
}

impl Separators {
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    fn span(&self, i: usize) -> (usize, usize) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        (start, self.ends[i] as usize)
    }

    pub(super) fn get(&self, i: usize) -> &[u8] {
        let (start, end) = self.span(i);
        &self.bytes[start..end]
    }

    /// Loads the first bytes of the separators (see `tree/warm.rs`).
    pub(super) fn touch(&self) {
        std::hint::black_box(self.bytes.first().copied());
    }

    pub(super) fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(end_offset(self.bytes.len()));
    }

    pub(super) fn insert(&mut self, i: usize, key: &[u8]) {
        if i == self.len() {
            return self.push(key);
        }
        let (start, _) = self.span(i);
        self.bytes.splice(start..start, key.iter().copied());
        self.ends.insert(i, end_offset(start + key.len()));
        for end in &mut self.ends[i + 1..] {
            *end += end_offset(key.len());
        }
    }

    /// Removes separator `i`, returning its bytes.
    pub(super) fn remove(&mut self, i: usize) -> Vec<u8> {
        let (start, end) = self.span(i);
        let key: Vec<u8> = self.bytes.drain(start..end).collect();
        self.ends.remove(i);
        for e in &mut self.ends[i..] {
            *e -= end_offset(key.len());
        }
        key
    }

    pub(super) fn replace(&mut self, i: usize, key: &[u8]) {
        self.remove(i);
        self.insert(i, key);
    }

    /// The separators from `i` on, taken out.
    pub(super) fn split_off(&mut self, i: usize) -> Separators {
        let mut rest = Separators::default();
        for j in i..self.len() {
            rest.push(self.get(j));
        }
        let (start, _) = if i < self.len() { self.span(i) } else { (self.bytes.len(), 0) };
        self.bytes.truncate(start);
        self.ends.truncate(i);
        rest
    }

    pub(super) fn append(&mut self, other: &Separators) {
        for i in 0..other.len() {
            self.push(other.get(i));
        }
    }
}

/// Separators are key bytes and keys are bounded far below 4 GiB (the codec's length
/// prefixes), so a branch's 32 of them fit `u32` offsets.
fn end_offset(n: usize) -> u32 {
    u32::try_from(n).expect("a branch's separators total under 4 GiB")
}

impl Branch {
    /// A root over two children split from one.
    pub(super) fn new(left: Node, separator: &[u8], right: Node) -> Self {
        let mut branch = Branch::default();
        branch.separators.push(separator);
        branch.children.push(left);
        branch.children.push(right);
        branch
    }

    /// The child whose keys' range holds `key`: the number of separators at most `key`.
    pub(super) fn child_for(&self, key: &[u8]) -> usize {
        let (mut low, mut high) = (0, self.separators.len());
        while low < high {
            let mid = low + (high - low) / 2;
            if compare_keys(self.separators.get(mid), key) == Ordering::Greater {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        low
    }
}

impl Node {
    /// Whether the node is below the minimum of a node that is not the last of its level.
    pub(super) fn is_underfull(&self) -> bool {
        match self {
            Node::Leaf(leaf) => leaf.len() < LEAF_MIN,
            Node::Branch(branch) => branch.children.len() < BRANCH_MIN,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            Node::Leaf(leaf) => leaf.len() == 0,
            Node::Branch(branch) => branch.children.is_empty(),
        }
    }

    /// The smallest key under this node (a separator for it). A non-root node is never empty.
    pub(super) fn first_key(&self) -> &[u8] {
        let mut node = self;
        loop {
            match node {
                Node::Leaf(leaf) => return leaf.entries()[0].key_bytes(),
                Node::Branch(branch) => node = &branch.children[0],
            }
        }
    }
}

/// Where a full node splits when an item was just put at `inserted_at` of its
/// `capacity + 1` items: in the last node of its level, an item put past the end (keys
/// arriving in ascending order) leaves the left node full and the new last one with that item
/// alone; anything else halves the node (both halves at least the minimum).
pub(super) fn split_point(inserted_at: usize, capacity: usize, last_at_level: bool) -> usize {
    if last_at_level && inserted_at == capacity {
        capacity
    } else {
        capacity.div_ceil(2)
    }
}

/// `left` and `right`, adjacent children with `separator` between them, put together again
/// after one of them fell below its minimum: one node if they fit into one, else two of about
/// equal size and the separator between them.
pub(super) enum Rebalanced {
    One(Node),
    Two(Node, Vec<u8>, Node),
}

pub(super) fn rebalance(left: &Node, separator: &[u8], right: &Node) -> Rebalanced {
    match (left, right) {
        (Node::Leaf(l), Node::Leaf(r)) => match l.join(r) {
            (one, None) => Rebalanced::One(Node::Leaf(Arc::new(one))),
            (l, Some(r)) => {
                let separator = r.entries()[0].key_bytes().to_vec();
                Rebalanced::Two(Node::Leaf(Arc::new(l)), separator, Node::Leaf(Arc::new(r)))
            }
        },
        (Node::Branch(l), Node::Branch(r)) => {
            let mut joined = Branch::clone(l);
            joined.separators.push(separator);
            joined.separators.append(&r.separators);
            joined.children.extend(r.children.iter().cloned());
            if joined.children.len() <= BRANCH_CAPACITY {
                return Rebalanced::One(Node::Branch(Arc::new(joined)));
            }
            let at = joined.children.len() / 2;
            let (separator, right) = joined.split_at(at);
            Rebalanced::Two(
                Node::Branch(Arc::new(joined)),
                separator,
                Node::Branch(Arc::new(right)),
            )
        }
        _ => unreachable!("siblings are at the same depth"),
    }
}

impl Branch {
    /// Keeps children `..at` and returns the separator that stood before child `at` with a
    /// branch of the rest.
    pub(super) fn split_at(&mut self, at: usize) -> (Vec<u8>, Branch) {
        let mut right_separators = self.separators.split_off(at - 1);
        let separator = right_separators.remove(0);
        let right_children: SmallVec<[Node; BRANCH_CAPACITY]> = self.children.drain(at..).collect();
        self.children.shrink_to_fit();
        (separator, Branch { separators: right_separators, children: right_children })
    }
}
