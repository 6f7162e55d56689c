use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;

use super::node::{Node, BRANCH_CAPACITY, BRANCH_MIN, LEAF_CAPACITY, LEAF_MIN};
use super::{SortedBuilder, Tree};
use crate::kv::Entry;

fn key(i: u32) -> String {
    format!("k{i:05}")
}

fn entry(i: u32, value: u8) -> Entry {
    Entry::new(&key(i), &[value], 1, 1, 1)
}

/// Asserts the invariants of `node.rs` over the whole tree and returns its depth and keys.
fn check(tree: &Tree) {
    let mut keys = Vec::new();
    check_node(&tree.root, true, true, None, None, &mut keys);
    assert_eq!(keys.len(), tree.len, "len counts the entries");
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys ascend");
}

/// The depth of `node`; keys under it are pushed to `keys` and lie in `[lower, upper)`.
fn check_node(
    node: &Node,
    is_root: bool,
    last_at_level: bool,
    lower: Option<&[u8]>,
    upper: Option<&[u8]>,
    keys: &mut Vec<Vec<u8>>,
) -> usize {
    match node {
        Node::Leaf(leaf) => {
            let n = leaf.len();
            leaf.check_hints();
            assert!(n <= LEAF_CAPACITY && (n > 0 || is_root));
            assert!(last_at_level || n >= LEAF_MIN, "a leaf of {n} entries");
            for e in leaf.entries() {
                let k = e.key_bytes();
                assert!(lower.is_none_or(|l| l <= k) && upper.is_none_or(|u| k < u));
                keys.push(k.to_vec());
            }
            1
        }
        Node::Branch(branch) => {
            let n = branch.children.len();
            assert!((if is_root { 2 } else { 1 }..=BRANCH_CAPACITY).contains(&n));
            assert!(last_at_level || n >= BRANCH_MIN, "a branch of {n} children");
            assert_eq!(branch.separators.len(), n - 1);
            let depths: Vec<usize> = (0..n)
                .map(|i| {
                    let lo = if i == 0 { lower } else { Some(branch.separators.get(i - 1)) };
                    let hi = if i == n - 1 { upper } else { Some(branch.separators.get(i)) };
                    check_node(
                        &branch.children[i],
                        false,
                        last_at_level && i == n - 1,
                        lo,
                        hi,
                        keys,
                    )
                })
                .collect();
            assert!(depths.windows(2).all(|w| w[0] == w[1]), "leaves at one depth");
            depths[0] + 1
        }
    }
}

fn built(n: u32) -> Tree {
    let mut builder = SortedBuilder::default();
    for i in 0..n {
        builder.push(entry(i, 0));
    }
    assert_eq!(builder.len(), n as usize);
    builder.finish()
}

/// Leaves per key of a tree, read off its nodes.
fn leaves(tree: &Tree) -> usize {
    fn count(node: &Node) -> usize {
        match node {
            Node::Leaf(_) => 1,
            Node::Branch(b) => b.children.iter().map(count).sum(),
        }
    }
    count(&tree.root)
}

#[test]
fn a_sorted_build_holds_every_key_in_full_leaves() {
    for n in [0, 1, 15, 16, 17, 31, 32, 33, 48, 1023, 1024, 1025, 33 * 32, 40_000] {
        let tree = built(n);
        check(&tree);
        assert_eq!(tree.iter().count(), n as usize);
        assert_eq!(leaves(&tree), (n as usize).div_ceil(LEAF_CAPACITY).max(1), "n = {n}");
        for i in (0..n).step_by(97) {
            assert_eq!(tree.get(key(i).as_bytes()).map(Entry::key), Some(key(i).as_str()));
        }
    }
}

#[test]
fn keys_inserted_in_ascending_order_fill_their_leaves() {
    let mut tree = Tree::default();
    for i in 0..10_000 {
        assert!(tree.insert(entry(i, 0)).is_none());
    }
    check(&tree);
    // One leaf more than a sorted build at most: the last one.
    assert!(leaves(&tree) <= 10_000usize.div_ceil(LEAF_CAPACITY) + 1, "{}", leaves(&tree));
}

#[test]
fn a_clone_keeps_its_version_while_the_original_changes() {
    let mut tree = built(5_000);
    let before = tree.clone();
    for i in (0..5_000).step_by(3) {
        tree.insert(entry(i, 1));
    }
    for i in (1..5_000).step_by(3) {
        tree.remove(key(i).as_bytes());
    }
    check(&tree);
    check(&before);
    assert_eq!(before.len(), 5_000);
    assert!(before.iter().all(|e| e.value() == [0]));
    assert_eq!(tree.len(), 5_000 - (1..5_000).step_by(3).count());
    assert_eq!(tree.get(key(0).as_bytes()).map(Entry::value), Some(&[1][..]));
}

#[test]
fn removing_every_key_leaves_an_empty_tree() {
    let mut tree = built(3_000);
    for i in (0..3_000).rev().step_by(2).chain((0..3_000).step_by(2)) {
        assert_eq!(tree.remove(key(i).as_bytes()).map(|e| e.key().to_owned()), Some(key(i)));
        assert!(tree.remove(key(i).as_bytes()).is_none());
    }
    check(&tree);
    assert_eq!((tree.len(), tree.iter().count()), (0, 0));
}

#[test]
fn an_owning_walk_yields_what_a_borrowed_one_does() {
    let tree = built(2_500);
    let borrowed: Vec<String> = tree.iter().map(|e| e.key().to_owned()).collect();
    let owned: Vec<String> = tree.into_entries().map(|e| e.key().to_owned()).collect();
    assert_eq!(borrowed, owned);
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u32, u8),
    Remove(u32),
}

fn ops(keys: u32, max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0..keys, any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => (0..keys).prop_map(Op::Remove),
        ],
        0..max_len,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any mix of inserts and removes on a built tree (splits, merges and refills at every
    /// level) agrees with a `BTreeMap` and keeps the invariants; a clone taken first does not
    /// change.
    #[test]
    fn a_tree_agrees_with_a_btreemap(
        start in 0u32..3_000,
        ops in ops(4_000, 3_000),
        probe in 0u32..4_100,
    ) {
        let mut tree = built(start);
        let mut model: BTreeMap<String, u8> = (0..start).map(|i| (key(i), 0)).collect();
        let frozen = tree.clone();
        for op in &ops {
            match *op {
                Op::Insert(k, v) => {
                    let old = tree.insert(entry(k, v)).map(|e| e.value()[0]);
                    prop_assert_eq!(old, model.insert(key(k), v));
                }
                Op::Remove(k) => {
                    let old = tree.remove(key(k).as_bytes()).map(|e| e.value()[0]);
                    prop_assert_eq!(old, model.remove(&key(k)));
                }
            }
        }
        check(&tree);
        let got: Vec<(String, u8)> = tree.iter().map(|e| (e.key().to_owned(), e.value()[0])).collect();
        let want: Vec<(String, u8)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        prop_assert_eq!(got, want);
        for (bound, inclusive) in [(Bound::Included(key(probe)), true), (Bound::Excluded(key(probe)), false)] {
            let lower = match &bound {
                Bound::Included(k) => Bound::Included(k.as_bytes()),
                Bound::Excluded(k) => Bound::Excluded(k.as_bytes()),
                Bound::Unbounded => Bound::Unbounded,
            };
            let got: Vec<&str> = tree.starting_at(lower).map(Entry::key).collect();
            let want: Vec<&str> =
                model.range::<String, _>((bound.clone(), Bound::Unbounded)).map(|(k, _)| k.as_str()).collect();
            prop_assert_eq!(got, want, "inclusive: {}", inclusive);
        }
        check(&frozen);
        prop_assert_eq!(frozen.len(), start as usize);
        prop_assert!(frozen.iter().map(|e| e.key().to_owned()).eq((0..start).map(key)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Keys of different lengths that are prefixes of one another and hold zero bytes (whose
    /// hints pad with zeros), behind a common prefix of 0–23 bytes (so that leaves share fewer
    /// and more bytes than they keep inline): searches, inserts, upserts and removes agree
    /// with a `BTreeMap`.
    #[test]
    fn keys_that_prefix_one_another_agree_with_a_btreemap(
        prefix_len in 0usize..24,
        ops in proptest::collection::vec(("[ab\u{0}]{0,7}", proptest::option::of(any::<u8>())), 0..2_500),
        probes in proptest::collection::vec("[ab\u{0}]{0,8}", 1..20),
    ) {
        let prefix = "p".repeat(prefix_len);
        let ops: Vec<(String, Option<u8>)> = ops.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)).collect();
        let probes: Vec<String> = probes.into_iter().map(|k| format!("{prefix}{k}")).collect();
        let mut tree = Tree::default();
        let mut model: BTreeMap<String, u8> = BTreeMap::new();
        for (i, (k, v)) in ops.iter().enumerate() {
            match v {
                Some(v) if i % 2 == 0 => {
                    let old = tree.insert(Entry::new(k, &[*v], 1, 1, 1)).map(|e| e.value()[0]);
                    prop_assert_eq!(old, model.insert(k.clone(), *v));
                }
                Some(v) => {
                    let mut seen = None;
                    let old = tree
                        .upsert(k.as_bytes(), |old| {
                            seen = Some(old.map(|e| e.value()[0]));
                            Entry::new(k, &[*v], 1, 1, 1)
                        })
                        .map(|e| e.value()[0]);
                    let want = model.insert(k.clone(), *v);
                    prop_assert_eq!(seen, Some(want), "make sees the entry it replaces");
                    prop_assert_eq!(old, want);
                }
                None => {
                    let old = tree.remove(k.as_bytes()).map(|e| e.value()[0]);
                    prop_assert_eq!(old, model.remove(k));
                }
            }
        }
        // Warming reads only: the tree is the same after it, probes present or not.
        let probe_keys: Vec<&[u8]> = probes.iter().chain(ops.iter().map(|(k, _)| k)).map(|k| k.as_bytes()).take(40).collect();
        for group in probe_keys.chunks(super::WARM_GROUP_KEYS + 3) {
            tree.warm(group);
        }
        check(&tree);
        for probe in &probes {
            prop_assert_eq!(tree.get(probe.as_bytes()).map(|e| e.value()[0]), model.get(probe).copied());
            let got: Vec<&str> = tree.starting_at(Bound::Excluded(probe.as_bytes())).take(40).map(Entry::key).collect();
            let want: Vec<&str> = model
                .range::<str, _>((Bound::Excluded(probe.as_str()), Bound::Unbounded))
                .take(40)
                .map(|(k, _)| k.as_str())
                .collect();
            prop_assert_eq!(got, want);
        }
        let rebuilt = {
            let mut b = SortedBuilder::default();
            model.iter().for_each(|(k, v)| b.push(Entry::new(k, &[*v], 1, 1, 1)));
            b.finish()
        };
        check(&rebuilt);
        for probe in &probes {
            prop_assert_eq!(rebuilt.get(probe.as_bytes()).map(|e| e.value()[0]), model.get(probe).copied());
        }
    }
}
