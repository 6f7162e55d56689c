//! A persistent (copy-on-write) B+tree of [`Entry`]s in key order: the state machine's data.
//!
//! Cloning the tree is O(1) (a snapshot job holds a clone while writes go on); a write copies
//! the nodes on its path that a clone still shares. Written for this map rather than taken
//! from a crate for four reasons a 1M-key state measured:
//! - a sorted snapshot is built bottom-up into full leaves ([`SortedBuilder`]), where inserting
//!   key by key cost the restart ≈ 250 ms of CPU and left leaves ≈ 56 % full;
//! - keys put in ascending order (a load) also fill leaves: a full node split by an item put
//!   past its end keeps its left part full ([`node::split_point`]);
//! - a branch holds copies of its separator keys in one buffer, so a lookup touches the
//!   entries' blocks only in the leaf it ends in, not at every level;
//! - a leaf holds a two-byte hint of each key ([`leaf`]), so a lookup reads about two of its
//!   entries' blocks rather than one per binary-search step (each one a cache miss in a
//!   large map: the lookups were 39 % of a restart's replay in imbl).

use std::ops::Bound;
use std::sync::Arc;

use super::entry::Entry;

mod build;
mod iter;
mod leaf;
mod node;
#[cfg(test)]
mod tests;
mod warm;

pub(crate) use build::SortedBuilder;
pub(crate) use iter::{IntoEntries, Iter};
use node::{rebalance, split_point, Branch, Leaf, Node, Rebalanced, BRANCH_CAPACITY};
pub(crate) use warm::WARM_GROUP_KEYS;

#[derive(Clone)]
pub(crate) struct Tree {
    root: Node,
    len: usize,
}

impl Default for Tree {
    fn default() -> Self {
        Self { root: Node::Leaf(Arc::new(Leaf::default())), len: 0 }
    }
}

/// A node split in two by an insert: the separator and the new right node.
type Split = Option<(Vec<u8>, Node)>;

impl Tree {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Entry> {
        let mut node = &self.root;
        loop {
            match node {
                Node::Leaf(leaf) => return leaf.find(key).ok().map(|i| &leaf.entries()[i]),
                Node::Branch(branch) => node = &branch.children[branch.child_for(key)],
            }
        }
    }

    /// Inserts `entry`, returning the entry with the same key it replaces.
    pub(crate) fn insert(&mut self, entry: Entry) -> Option<Entry> {
        let key = entry.clone();
        self.upsert(key.key_bytes(), move |_| entry)
    }

    /// Puts `make(the entry of key, if any)` in the place of `key`, returning the entry it
    /// replaces: one descent, where a lookup followed by [`Tree::insert`] takes two (and at a
    /// million keys a descent is mostly cache misses). `make` must return an entry of `key`.
    pub(crate) fn upsert(
        &mut self,
        key: &[u8],
        make: impl FnOnce(Option<&Entry>) -> Entry,
    ) -> Option<Entry> {
        let (replaced, split) = insert_into(&mut self.root, key, make, true);
        if let Some((separator, right)) = split {
            let left = std::mem::replace(&mut self.root, Node::Leaf(Arc::new(Leaf::default())));
            self.root = Node::Branch(Arc::new(Branch::new(left, &separator, right)));
        }
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        // Look first: a miss must not copy the nodes on its path.
        self.get(key)?;
        let removed = remove_from(&mut self.root, key);
        debug_assert!(removed.is_some(), "an entry found is removed");
        self.len -= 1;
        // A root branch left with one child gives way to it (an empty one to an empty leaf).
        while let Node::Branch(branch) = &self.root {
            match branch.children.len() {
                0 => self.root = Node::Leaf(Arc::new(Leaf::default())),
                1 => self.root = branch.children[0].clone(),
                _ => break,
            }
        }
        removed
    }

    pub(crate) fn iter(&self) -> Iter<'_> {
        Iter::new(&self.root, Bound::Unbounded)
    }

    /// The entries from `lower` on, in key order.
    pub(crate) fn starting_at(&self, lower: Bound<&[u8]>) -> Iter<'_> {
        Iter::new(&self.root, lower)
    }

    pub(crate) fn into_entries(self) -> IntoEntries {
        IntoEntries::new(self.root)
    }
}

/// Puts `make(the entry of key, if any)` at `key` under `node`, the last node of its level if
/// `last_at_level`.
fn insert_into(
    node: &mut Node,
    key: &[u8],
    make: impl FnOnce(Option<&Entry>) -> Entry,
    last_at_level: bool,
) -> (Option<Entry>, Split) {
    match node {
        Node::Leaf(leaf) => {
            let leaf = Arc::make_mut(leaf);
            let at = match leaf.find(key) {
                Ok(i) => {
                    let entry = make(Some(&leaf.entries()[i]));
                    debug_assert_eq!(entry.key_bytes(), key, "make returns an entry of key");
                    return (Some(leaf.replace(i, entry)), None);
                }
                Err(i) => i,
            };
            let entry = make(None);
            debug_assert_eq!(entry.key_bytes(), key, "make returns an entry of key");
            let split = leaf.insert(at, entry, last_at_level).map(|right| {
                let separator = right.entries()[0].key_bytes().to_vec();
                (separator, Node::Leaf(Arc::new(right)))
            });
            (None, split)
        }
        Node::Branch(branch) => {
            let branch = Arc::make_mut(branch);
            let child = branch.child_for(key);
            let last_child = last_at_level && child + 1 == branch.children.len();
            let (replaced, split) = insert_into(&mut branch.children[child], key, make, last_child);
            let Some((separator, right)) = split else {
                return (replaced, None);
            };
            branch.separators.insert(child, &separator);
            branch.children.insert(child + 1, right);
            if branch.children.len() <= BRANCH_CAPACITY {
                return (replaced, None);
            }
            let at = split_point(child + 1, BRANCH_CAPACITY, last_at_level);
            let (separator, right) = branch.split_at(at);
            (replaced, Some((separator, Node::Branch(Arc::new(right)))))
        }
    }
}

/// Removes the entry of `key`, which is in the tree under `node`.
fn remove_from(node: &mut Node, key: &[u8]) -> Option<Entry> {
    match node {
        Node::Leaf(leaf) => {
            let at = leaf.find(key).ok()?;
            Some(Arc::make_mut(leaf).remove(at))
        }
        Node::Branch(branch) => {
            let branch = Arc::make_mut(branch);
            let child = branch.child_for(key);
            let removed = remove_from(&mut branch.children[child], key)?;
            if branch.children[child].is_empty() {
                // Only the last node of a level can empty (any other is refilled at its
                // minimum), and with it its separator, the one before it, goes.
                branch.children.remove(child);
                if child > 0 {
                    branch.separators.remove(child - 1);
                }
            } else if branch.children[child].is_underfull() && branch.children.len() > 1 {
                refill(branch, child);
            }
            Some(removed)
        }
    }
}

/// Puts child `child` of `branch`, below its minimum, together with a neighbour.
fn refill(branch: &mut Branch, child: usize) {
    let left = if child > 0 { child - 1 } else { child };
    let rebalanced =
        rebalance(&branch.children[left], branch.separators.get(left), &branch.children[left + 1]);
    match rebalanced {
        Rebalanced::One(node) => {
            branch.children[left] = node;
            branch.children.remove(left + 1);
            branch.separators.remove(left);
        }
        Rebalanced::Two(l, separator, r) => {
            branch.children[left] = l;
            branch.children[left + 1] = r;
            branch.separators.replace(left, &separator);
        }
    }
}
