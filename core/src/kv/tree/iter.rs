//! In-order walks over a tree: borrowed ([`Iter`]) and owning ([`IntoEntries`]).

use std::ops::Bound;

use super::node::{Branch, Node};
use crate::kv::Entry;

/// The entries from a lower bound on, in key order.
pub(crate) struct Iter<'a> {
    /// The branches above the current leaf and the next child to visit in each.
    path: Vec<(&'a Branch, usize)>,
    leaf: std::slice::Iter<'a, Entry>,
}

impl<'a> Iter<'a> {
    pub(super) fn new(root: &'a Node, lower: Bound<&[u8]>) -> Self {
        let mut iter = Iter { path: Vec::new(), leaf: [].iter() };
        let (key, inclusive) = match lower {
            Bound::Unbounded => {
                iter.descend_first(root);
                return iter;
            }
            Bound::Included(key) => (key, true),
            Bound::Excluded(key) => (key, false),
        };
        let mut node = root;
        loop {
            match node {
                Node::Leaf(leaf) => {
                    iter.leaf = leaf.entries()[leaf.position_from(key, inclusive)..].iter();
                    return iter;
                }
                Node::Branch(branch) => {
                    let child = branch.child_for(key);
                    iter.path.push((branch, child + 1));
                    node = &branch.children[child];
                }
            }
        }
    }

    /// Makes the first leaf under `node` the current one.
    fn descend_first(&mut self, mut node: &'a Node) {
        loop {
            match node {
                Node::Leaf(leaf) => {
                    self.leaf = leaf.entries().iter();
                    return;
                }
                Node::Branch(branch) => {
                    self.path.push((branch, 1));
                    node = &branch.children[0];
                }
            }
        }
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Entry;

    fn next(&mut self) -> Option<&'a Entry> {
        loop {
            if let Some(entry) = self.leaf.next() {
                return Some(entry);
            }
            let (branch, next) = self.path.last_mut()?;
            let branch: &'a Branch = branch;
            if *next < branch.children.len() {
                let child = &branch.children[*next];
                *next += 1;
                self.descend_first(child);
            } else {
                self.path.pop();
            }
        }
    }
}

/// Every entry in key order, owning the tree (a clone of each entry is handed out; the nodes
/// are freed once the walk is done with them and no other version shares them).
pub(crate) struct IntoEntries {
    /// The nodes from the root down to the current leaf and the next item to visit in each.
    path: Vec<(Node, usize)>,
}

impl IntoEntries {
    pub(super) fn new(root: Node) -> Self {
        Self { path: vec![(root, 0)] }
    }
}

impl Iterator for IntoEntries {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            let (node, next) = self.path.last_mut()?;
            let child = match node {
                Node::Leaf(leaf) => {
                    if let Some(entry) = leaf.entries().get(*next) {
                        *next += 1;
                        return Some(entry.clone());
                    }
                    None
                }
                Node::Branch(branch) => branch.children.get(*next).cloned(),
            };
            match child {
                Some(child) => {
                    *next += 1;
                    self.path.push((child, 0));
                }
                None => {
                    self.path.pop();
                }
            }
        }
    }
}

impl std::fmt::Debug for IntoEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntoEntries").field("depth", &self.path.len()).finish()
    }
}
