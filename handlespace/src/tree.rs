//! The persistent B+tree that holds a pool's members (PEs) in selection order, so that a change
//! costs O(log n) in the pool size while handle resolutions read a consistent version without
//! locks.
//!
//! # Model
//!
//! Items sit in leaves in ascending [`Key`] order; every inner node keeps, per child, the number
//! of items below it, the sum of their selection values and the greatest key, and for a leaf
//! whose items' values are not all 1 the values themselves. So a reader finds the item at a
//! rank, the item whose interval holds a point of the values' cumulative sum (weighted draws,
//! which read no item but the one found), or the rank of a key, each in one descent.
//!
//! Nodes are shared through [`Arc`]: a [`Tree`] is a cheap handle on its root, and a published
//! version is just a clone of the writer's tree. The writer changes its tree in place where a
//! node is its own ([`Arc::get_mut`]) and copies a node only while it is shared with a published
//! version (path copying): the first change to a path after a publication copies that path
//! (O(log n) nodes of at most [`LEAF_MAX`] items or [`INNER_MAX`] children), later changes
//! before the next publication reuse the copies. Readers never see a change: the versions they
//! hold are never written, only dropped when the last reader lets go.
//!
//! All leaves are at the same depth. Inserting splits a node that overflows (an item added after
//! the tree's last key splits off one item only, so a pool filled in key order has full leaves);
//! removing merges a node that fell below a quarter of its capacity into a neighbour when both
//! fit in one node.

use std::sync::Arc;

/// The order of items: (static key, PE identifier). Pools whose policy is not ordered by a key
/// use the registration's sequence number as the static key, so their PEs go in registration
/// order.
pub(crate) type Key = (u32, u64);

/// What the tree needs of an item.
pub(crate) trait Item: Clone {
    /// The item's place in the order; must not change while it is in the tree.
    fn key(&self) -> Key;
    /// The item's selection value (its share in weighted draws), summed in inner nodes.
    fn value(&self) -> u32;
}

/// Most items per leaf.
///
/// 20 because a full leaf of pool members (20 × 152 bytes and the reference counts, 3 056
/// bytes) fills mimalloc's 3 072-byte size class: pools in registration order consist of full
/// leaves, and 16 members (2 448 bytes) would waste 624 bytes of a 3 072-byte block, 39 per PE.
/// (A member was 160 bytes, 19 to a leaf, then 168 with the TLS identity a PE ID is bound to,
/// 18 to a leaf, 171 bytes of block per PE; it is 152 since its selection value is derived,
/// its expiry timer and identity are 4-byte indexes and its unreachable reports are counted in
/// the shard: 154 bytes of block per PE. Smaller members would need 144 bytes for 21 a leaf.)
pub(crate) const LEAF_MAX: usize = 20;
/// Most children per inner node.
pub(crate) const INNER_MAX: usize = 16;
/// Deepest tree: inner nodes split in halves (at least 8 children each) except at the tree's
/// end, so 2^32 items need at most 12 levels.
const MAX_DEPTH: usize = 24;

/// A node: its items or children in one allocation with the reference counts, so a reader
/// reaches a leaf's members in one step from its parent (or from the pool's snapshot). Nodes are
/// never resized: a change that adds or removes an item builds the node anew (at most
/// [`LEAF_MAX`] items or [`INNER_MAX`] children), one that replaces an item changes it in place
/// where the node is the writer's own.
#[derive(Debug)]
enum Node<T> {
    Leaf(Arc<[T]>),
    Inner(Arc<[Child<T>]>),
}

impl<T> Clone for Node<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Leaf(items) => Self::Leaf(Arc::clone(items)),
            Self::Inner(children) => Self::Inner(Arc::clone(children)),
        }
    }
}

/// The values of a leaf's items in order (zeros past its end), kept for a leaf whose values
/// are not all 1 ([`Child::values`]).
type LeafValues = Option<Arc<[u32; LEAF_MAX]>>;

/// An inner node's summary of one child: 56 bytes, so that a full inner node (16 of them and
/// the reference counts, 912 bytes) fits mimalloc's 1 024-byte size class.
#[derive(Debug)]
struct Child<T> {
    node: Node<T>,
    /// Sum of the values below.
    sum: u64,
    /// The greatest key below, in two fields (see [`Child::last`]) so that `count` fills the
    /// room a `Key` would pad.
    last_id: u64,
    last_order: u32,
    /// Items below.
    count: u32,
    /// For a leaf whose items' values are not all 1 (a pool of a weighted policy), the values:
    /// a leaf's members lie a cache line or more apart and a value is derived from a member's
    /// policy, so that [`Tree::locate`] reads, of a leaf's items, only the one it returns. In
    /// their own allocation, shared by the copies of the parent: pools whose values are all 1
    /// (round robin, the sorted policies, random) do not pay for them.
    values: LeafValues,
}

impl<T> Clone for Child<T> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            sum: self.sum,
            last_id: self.last_id,
            last_order: self.last_order,
            count: self.count,
            values: self.values.clone(),
        }
    }
}

impl<T: Item> Node<T> {
    fn len(&self) -> usize {
        match self {
            Self::Leaf(items) => items.len(),
            Self::Inner(children) => children.len(),
        }
    }

    fn capacity_limit(&self) -> usize {
        match self {
            Self::Leaf(_) => LEAF_MAX,
            Self::Inner(_) => INNER_MAX,
        }
    }

    /// Count, sum and greatest key of everything below (O(node size)).
    fn summary(&self) -> (u32, u64, Key) {
        match self {
            Self::Leaf(items) => (
                items.len() as u32,
                items.iter().map(|t| u64::from(t.value())).sum(),
                items.last().map_or((0, 0), Item::key),
            ),
            Self::Inner(children) => (
                children.iter().map(|c| c.count).sum(),
                children.iter().map(|c| c.sum).sum(),
                children.last().map_or((0, 0), Child::last),
            ),
        }
    }

    /// [`Child::values`] of this node (O(node size)).
    fn values(&self) -> LeafValues {
        let Self::Leaf(items) = self else {
            return None;
        };
        if items.iter().all(|t| t.value() == 1) {
            return None;
        }
        let mut values = [0; LEAF_MAX];
        for (value, item) in values.iter_mut().zip(items.iter()) {
            *value = item.value();
        }
        Some(Arc::new(values))
    }
}

impl<T: Item> Child<T> {
    fn summarize(node: Node<T>) -> Self {
        let (count, sum, last) = node.summary();
        let mut child = Self {
            sum,
            last_id: 0,
            last_order: 0,
            count,
            values: node.values(),
            node,
        };
        child.set_last(last);
        child
    }

    /// The greatest key below.
    #[inline]
    fn last(&self) -> Key {
        (self.last_order, self.last_id)
    }

    fn set_last(&mut self, (order, id): Key) {
        (self.last_order, self.last_id) = (order, id);
    }

    /// Recomputes the summary after the child changed in ways the caller did not track.
    fn refresh(&mut self) {
        let last;
        (self.count, self.sum, last) = self.node.summary();
        self.set_last(last);
        self.values = self.node.values();
    }
}

/// Builds a node of `items`, split in two if they are more than `limit`: halves, or only the last
/// one when the change went past the tree's end (so a pool filled in key order has full nodes).
/// Returns the node and the split-off right sibling.
fn build<V>(mut items: Vec<V>, limit: usize, at_end: bool) -> (Arc<[V]>, Option<Arc<[V]>>) {
    if items.len() <= limit {
        return (items.into(), None);
    }
    let cut = if at_end {
        items.len() - 1
    } else {
        items.len() / 2
    };
    let right = items.split_off(cut);
    (items.into(), Some(right.into()))
}

/// A version of a pool's members; see the module documentation.
#[derive(Debug)]
pub(crate) struct Tree<T> {
    root: Option<Node<T>>,
    count: u32,
    sum: u64,
}

impl<T> Clone for Tree<T> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            count: self.count,
            sum: self.sum,
        }
    }
}

impl<T> Default for Tree<T> {
    fn default() -> Self {
        Self {
            root: None,
            count: 0,
            sum: 0,
        }
    }
}

impl<T: Item> Tree<T> {
    /// Number of items.
    pub(crate) fn len(&self) -> usize {
        self.count as usize
    }

    /// Sum of the items' values.
    pub(crate) fn total(&self) -> u64 {
        self.sum
    }

    /// The greatest key, if any.
    fn last_key(&self) -> Option<Key> {
        let mut node = self.root.as_ref()?;
        loop {
            match node {
                Node::Leaf(items) => return items.last().map(Item::key),
                Node::Inner(children) => node = &children.last()?.node,
            }
        }
    }

    /// The item with `key`.
    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        let mut node = self.root.as_ref()?;
        loop {
            match node {
                Node::Inner(children) => {
                    let i = children.partition_point(|c| c.last() < key);
                    node = &children.get(i)?.node;
                }
                Node::Leaf(items) => {
                    let i = items.binary_search_by(|t| t.key().cmp(&key)).ok()?;
                    return Some(&items[i]);
                }
            }
        }
    }

    /// The item at `rank` (0-based, in key order).
    ///
    /// # Panics
    ///
    /// If `rank >= self.len()`.
    #[inline]
    pub(crate) fn at(&self, rank: usize) -> &T {
        let mut node = self.root.as_ref().expect("rank within the tree");
        let mut rank = rank;
        loop {
            match node {
                Node::Leaf(items) => return &items[rank],
                Node::Inner(children) => {
                    let mut i = 0;
                    while rank >= children[i].count as usize {
                        rank -= children[i].count as usize;
                        i += 1;
                    }
                    node = &children[i].node;
                }
            }
        }
    }

    /// The items from `rank` to the end of the leaf holding it, found in one descent (what a
    /// batch of resolutions reads ahead); empty if `rank >= self.len()`.
    #[inline]
    pub(crate) fn leaf_from(&self, rank: usize) -> &[T] {
        let Some(mut node) = self.root.as_ref() else {
            return &[];
        };
        let mut rank = rank;
        loop {
            match node {
                Node::Leaf(items) => return items.get(rank..).unwrap_or(&[]),
                Node::Inner(children) => {
                    let mut i = 0;
                    while i < children.len() && rank >= children[i].count as usize {
                        rank -= children[i].count as usize;
                        i += 1;
                    }
                    let Some(child) = children.get(i) else {
                        return &[];
                    };
                    node = &child.node;
                }
            }
        }
    }

    /// The items from rank `from` on, each leaf found by one descent ([`Self::leaf_from`]): for
    /// the few items of a selection, cheaper to start than [`Self::iter_from`] (no stack of the
    /// levels to set up).
    pub(crate) fn walk_from(&self, from: usize) -> impl Iterator<Item = &T> + '_ {
        let (mut rank, mut leaf): (usize, &[T]) = (from, &[]);
        std::iter::from_fn(move || {
            if leaf.is_empty() {
                leaf = self.leaf_from(rank);
            }
            let (first, rest) = leaf.split_first()?;
            (rank, leaf) = (rank + 1, rest);
            Some(first)
        })
    }

    /// The item whose value interval holds `mass` (items cover `[0, total)` in key order, each
    /// its value wide), with its rank, the start of its interval and its value. `mass` must be
    /// below [`Self::total`]; zero-width items are never returned. A leaf below the root is
    /// searched in its summary's values ([`Child::values`]; none when all are 1): of the leaf's
    /// items, only the one returned is read (a member is a cache line or more apart from the
    /// next, and a draw waited for each one it read, the misses one after the other).
    pub(crate) fn locate(&self, mass: u64) -> Located<'_, T> {
        let mut node = self.root.as_ref().expect("mass within the tree");
        let (mut rank, mut start) = (0usize, 0u64);
        loop {
            match node {
                Node::Inner(children) => {
                    let last = children.len() - 1;
                    let mut i = 0;
                    while i < last && mass >= start + children[i].sum {
                        start += children[i].sum;
                        rank += children[i].count as usize;
                        i += 1;
                    }
                    let child = &children[i];
                    if let Node::Leaf(items) = &child.node {
                        let (i, value) = match &child.values {
                            Some(values) => {
                                let values = &values[..items.len()];
                                let i = interval_at(values.iter().copied(), mass, &mut start);
                                (i, values[i])
                            }
                            // Every item 1 wide: the offset is the index.
                            None => {
                                let i = usize::try_from(mass - start)
                                    .unwrap_or(usize::MAX)
                                    .min(items.len() - 1);
                                start += i as u64;
                                (i, 1)
                            }
                        };
                        return Located {
                            rank: rank + i,
                            start,
                            value,
                            item: &items[i],
                        };
                    }
                    node = &child.node;
                }
                Node::Leaf(items) => {
                    let i = interval_at(items.iter().map(Item::value), mass, &mut start);
                    return Located {
                        rank: rank + i,
                        start,
                        value: items[i].value(),
                        item: &items[i],
                    };
                }
            }
        }
    }

    /// The number of items whose key is below `key`.
    pub(crate) fn rank_of(&self, key: Key) -> usize {
        let Some(mut node) = self.root.as_ref() else {
            return 0;
        };
        let mut rank = 0usize;
        loop {
            match node {
                Node::Leaf(items) => return rank + items.partition_point(|t| t.key() < key),
                Node::Inner(children) => {
                    let i = children.partition_point(|c| c.last() < key);
                    rank += children[..i]
                        .iter()
                        .map(|c| c.count as usize)
                        .sum::<usize>();
                    match children.get(i) {
                        Some(c) => node = &c.node,
                        None => return rank,
                    }
                }
            }
        }
    }

    /// The items in key order, from rank `from` on.
    pub(crate) fn iter_from(&self, from: usize) -> Iter<'_, T> {
        let mut iter = Iter {
            stack: [&[]; MAX_DEPTH],
            depth: 0,
            leaf: &[],
        };
        let Some(mut node) = self.root.as_ref() else {
            return iter;
        };
        let mut rank = from;
        loop {
            match node {
                Node::Leaf(items) => {
                    iter.leaf = &items[rank.min(items.len())..];
                    return iter;
                }
                Node::Inner(children) => {
                    let mut i = 0;
                    while i < children.len() && rank >= children[i].count as usize {
                        rank -= children[i].count as usize;
                        i += 1;
                    }
                    let Some(child) = children.get(i) else {
                        return iter;
                    };
                    iter.stack[iter.depth] = &children[i + 1..];
                    iter.depth += 1;
                    node = &child.node;
                }
            }
        }
    }

    /// The items in key order.
    pub(crate) fn iter(&self) -> Iter<'_, T> {
        self.iter_from(0)
    }

    /// Inserts `item`, whose key must not be in the tree yet.
    pub(crate) fn insert(&mut self, item: T) {
        let value = u64::from(item.value());
        let key = item.key();
        debug_assert!(self.get(key).is_none(), "key {key:?} inserted twice");
        let at_end = self.last_key().is_none_or(|last| key > last);
        match &mut self.root {
            None => self.root = Some(Node::Leaf(Arc::from(vec![item]))),
            Some(root) => {
                if let Some(right) = insert_into(root, item, key, at_end) {
                    let left = Child::summarize(root.clone());
                    *root = Node::Inner(Arc::from(vec![left, right]));
                }
            }
        }
        self.count += 1;
        self.sum += value;
    }

    /// Removes and returns the item with `key`, which must be in the tree (a missing key may
    /// copy the path to where it would be and returns `None`).
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let root = self.root.as_mut()?;
        let item = remove_from(root, key)?;
        self.count -= 1;
        self.sum -= u64::from(item.value());
        // A root with one child hands over to it; an empty tree has no root.
        loop {
            match self.root.as_ref() {
                Some(Node::Inner(children)) if children.len() == 1 => {
                    self.root = Some(children[0].node.clone());
                }
                Some(node) if node.len() == 0 => self.root = None,
                _ => break,
            }
        }
        Some(item)
    }

    /// Changes the item with `key` in place with `f` (copying its path where it is shared), which
    /// must leave the key alone; its value may change. Returns `None` if there is no such item.
    pub(crate) fn update<R>(&mut self, key: Key, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.get(key)?;
        let root = self.root.as_mut()?;
        let (result, old, new) = update_in(root, key, f);
        self.sum = self.sum - u64::from(old) + u64::from(new);
        Some(result)
    }

    /// Applies `f` to every item for which `wanted` holds (copying only the paths to them);
    /// `f` must leave keys and values alone.
    pub(crate) fn update_where(&mut self, wanted: impl Fn(&T) -> bool, mut f: impl FnMut(&mut T)) {
        if let Some(root) = &mut self.root {
            update_where_in(root, &wanted, &mut f);
        }
    }
}

/// What [`Tree::locate`] found.
#[derive(Debug)]
pub(crate) struct Located<'t, T> {
    /// The item's rank (0-based, in key order).
    pub rank: usize,
    /// The start of its value interval.
    pub start: u64,
    /// Its value (the interval's width).
    pub value: u32,
    /// The item.
    pub item: &'t T,
}

/// The index of the interval that holds `mass` among consecutive intervals of widths `values`
/// from `*start` on (the last one if none before it does), moving `*start` to its start.
#[inline]
fn interval_at(values: impl ExactSizeIterator<Item = u32>, mass: u64, start: &mut u64) -> usize {
    let last = values.len() - 1;
    for (i, v) in values.enumerate().take(last) {
        let v = u64::from(v);
        if mass < *start + v {
            return i;
        }
        *start += v;
    }
    last
}

/// Inserts into the subtree at `node`; returns a new right sibling if `node` split.
fn insert_into<T: Item>(node: &mut Node<T>, item: T, key: Key, at_end: bool) -> Option<Child<T>> {
    match node {
        Node::Leaf(items) => {
            let at = items.partition_point(|t| t.key() < key);
            let mut copy = Vec::with_capacity(items.len() + 1);
            copy.extend_from_slice(&items[..at]);
            copy.push(item);
            copy.extend_from_slice(&items[at..]);
            let (left, right) = build(copy, LEAF_MAX, at_end);
            *items = left;
            right.map(|r| Child::summarize(Node::Leaf(r)))
        }
        Node::Inner(children) => {
            let value = u64::from(item.value());
            let i = children
                .partition_point(|c| c.last() < key)
                .min(children.len() - 1);
            let own = Arc::make_mut(children);
            let split = insert_into(&mut own[i].node, item, key, at_end);
            let child = &mut own[i];
            let Some(right) = split else {
                child.count += 1;
                child.sum += value;
                child.values = child.node.values();
                child.set_last(child.last().max(key));
                return None;
            };
            child.refresh();
            let mut copy = Vec::with_capacity(children.len() + 1);
            copy.extend_from_slice(&children[..=i]);
            copy.push(right);
            copy.extend_from_slice(&children[i + 1..]);
            let (left, right) = build(copy, INNER_MAX, at_end);
            *children = left;
            right.map(|r| Child::summarize(Node::Inner(r)))
        }
    }
}

/// Removes the item with `key` from the subtree at `node`; `None` if it is not there.
fn remove_from<T: Item>(node: &mut Node<T>, key: Key) -> Option<T> {
    match node {
        Node::Leaf(items) => {
            let at = items.binary_search_by(|t| t.key().cmp(&key)).ok()?;
            let item = items[at].clone();
            let mut copy = Vec::with_capacity(items.len() - 1);
            copy.extend_from_slice(&items[..at]);
            copy.extend_from_slice(&items[at + 1..]);
            *items = copy.into();
            Some(item)
        }
        Node::Inner(children) => {
            let i = children.partition_point(|c| c.last() < key);
            let own = Arc::make_mut(children);
            let child = own.get_mut(i)?;
            let item = remove_from(&mut child.node, key)?;
            child.count -= 1;
            child.sum -= u64::from(item.value());
            child.values = child.node.values();
            let empty = child.count == 0;
            if !empty && child.last() == key {
                child.set_last(child.node.summary().2);
            }
            if empty {
                let mut copy = children.to_vec();
                copy.remove(i);
                *children = copy.into();
            } else {
                merge_small(children, i);
            }
            Some(item)
        }
    }
}

/// Merges child `i` into a neighbour when it fell below a quarter of its capacity and both fit
/// in one node.
fn merge_small<T: Item>(children: &mut Arc<[Child<T>]>, i: usize) {
    let len = children[i].node.len();
    let limit = children[i].node.capacity_limit();
    if len >= limit / 4 || children.len() < 2 {
        return;
    }
    let j = if i + 1 < children.len() { i + 1 } else { i - 1 };
    if children[j].node.len() + len > limit {
        return;
    }
    let (left, right) = (i.min(j), i.max(j));
    let (a, b) = (&children[left], &children[right]);
    let node = match (&a.node, &b.node) {
        (Node::Leaf(x), Node::Leaf(y)) => Node::Leaf(x.iter().chain(y.iter()).cloned().collect()),
        (Node::Inner(x), Node::Inner(y)) => {
            Node::Inner(x.iter().chain(y.iter()).cloned().collect())
        }
        _ => unreachable!("siblings are at the same depth"),
    };
    let merged = Child {
        sum: a.sum + b.sum,
        last_id: b.last_id,
        last_order: b.last_order,
        count: a.count + b.count,
        values: node.values(),
        node,
    };
    let mut copy = Vec::with_capacity(children.len() - 1);
    copy.extend_from_slice(&children[..left]);
    copy.push(merged);
    copy.extend_from_slice(&children[right + 1..]);
    *children = copy.into();
}

/// Changes the item with `key` (present) in the subtree at `node`; returns `f`'s result and the
/// item's value before and after.
fn update_in<T: Item, R>(
    node: &mut Node<T>,
    key: Key,
    f: impl FnOnce(&mut T) -> R,
) -> (R, u32, u32) {
    match node {
        Node::Leaf(items) => {
            let at = items.partition_point(|t| t.key() < key);
            let item = &mut Arc::make_mut(items)[at];
            let old = item.value();
            let result = f(item);
            debug_assert_eq!(item.key(), key, "an update changed the key");
            (result, old, item.value())
        }
        Node::Inner(children) => {
            let i = children.partition_point(|c| c.last() < key);
            let own = Arc::make_mut(children);
            let (result, old, new) = update_in(&mut own[i].node, key, f);
            if old != new {
                own[i].sum = own[i].sum - u64::from(old) + u64::from(new);
                own[i].values = own[i].node.values();
            }
            (result, old, new)
        }
    }
}

fn any_in<T: Item>(node: &Node<T>, wanted: &impl Fn(&T) -> bool) -> bool {
    match node {
        Node::Leaf(items) => items.iter().any(wanted),
        Node::Inner(children) => children.iter().any(|c| any_in(&c.node, wanted)),
    }
}

fn update_where_in<T: Item>(
    node: &mut Node<T>,
    wanted: &impl Fn(&T) -> bool,
    f: &mut impl FnMut(&mut T),
) {
    if !any_in(node, wanted) {
        return;
    }
    match node {
        Node::Leaf(items) => {
            for item in Arc::make_mut(items).iter_mut().filter(|t| wanted(t)) {
                f(item);
            }
        }
        Node::Inner(children) => {
            for child in Arc::make_mut(children).iter_mut() {
                update_where_in(&mut child.node, wanted, f);
            }
        }
    }
}

/// The items of a [`Tree`] in key order ([`Tree::iter_from`]); does not allocate.
pub(crate) struct Iter<'t, T> {
    /// Per inner level, the children not visited yet.
    stack: [&'t [Child<T>]; MAX_DEPTH],
    depth: usize,
    leaf: &'t [T],
}

impl<'t, T> Iterator for Iter<'t, T> {
    type Item = &'t T;

    fn next(&mut self) -> Option<&'t T> {
        loop {
            if let Some((first, rest)) = self.leaf.split_first() {
                self.leaf = rest;
                return Some(first);
            }
            // Climb to the nearest level with a child left, then down its leftmost path.
            let mut node = loop {
                if self.depth == 0 {
                    return None;
                }
                let siblings = &mut self.stack[self.depth - 1];
                if let Some((next, rest)) = siblings.split_first() {
                    *siblings = rest;
                    break &next.node;
                }
                self.depth -= 1;
            };
            loop {
                match node {
                    Node::Leaf(items) => {
                        self.leaf = items;
                        break;
                    }
                    Node::Inner(children) => {
                        let (first, rest) = children.split_first()?;
                        self.stack[self.depth] = rest;
                        self.depth += 1;
                        node = &first.node;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct T {
        key: Key,
        value: u32,
        tag: u32,
    }

    impl Item for T {
        fn key(&self) -> Key {
            self.key
        }
        fn value(&self) -> u32 {
            self.value
        }
    }

    fn t(id: u64, value: u32) -> T {
        T {
            key: (0, id),
            value,
            tag: 0,
        }
    }

    /// Checks every invariant against a sorted model: order, counts, sums, last keys, equal
    /// leaf depth, node sizes.
    fn check(tree: &Tree<T>, model: &[T]) {
        assert_eq!(tree.len(), model.len());
        assert_eq!(
            tree.total(),
            model.iter().map(|t| u64::from(t.value)).sum::<u64>()
        );
        let got: Vec<T> = tree.iter().cloned().collect();
        assert_eq!(got, model);
        for (r, m) in model.iter().enumerate() {
            assert_eq!(tree.at(r), m);
            assert_eq!(tree.get(m.key), Some(m));
            assert_eq!(tree.rank_of(m.key), r);
            assert_eq!(tree.iter_from(r).next(), Some(m));
        }
        if let Some(root) = &tree.root {
            let mut depths = Vec::new();
            walk(root, 0, &mut depths, true);
            assert!(depths.windows(2).all(|w| w[0] == w[1]), "{depths:?}");
        }
    }

    fn walk(node: &Node<T>, depth: usize, depths: &mut Vec<usize>, root: bool) {
        assert!(node.len() <= node.capacity_limit());
        assert!(root || node.len() > 0);
        match node {
            Node::Leaf(_) => depths.push(depth),
            Node::Inner(children) => {
                for c in children.iter() {
                    assert_eq!((c.count, c.sum, c.last()), c.node.summary());
                    assert_eq!(c.values, c.node.values());
                    walk(&c.node, depth + 1, depths, false);
                }
            }
        }
    }

    #[test]
    fn inserts_removes_and_updates_match_a_sorted_model_through_many_versions() {
        let mut rng = crate::Rng::seed(7);
        let mut tree = Tree::default();
        let mut model: Vec<T> = Vec::new();
        let mut versions = Vec::new();
        for step in 0..6000u32 {
            let id = rng.below(2000);
            let key = (0, id);
            match model.binary_search_by(|t| t.key.cmp(&key)) {
                Err(at) if rng.below(3) > 0 => {
                    let item = t(id, rng.below(100) as u32);
                    model.insert(at, item.clone());
                    tree.insert(item);
                }
                Ok(at) if rng.below(2) == 0 => {
                    assert_eq!(tree.remove(key), Some(model.remove(at)));
                }
                Ok(at) => {
                    let value = rng.below(100) as u32;
                    tree.update(key, |t| {
                        t.value = value;
                        t.tag = step;
                    });
                    model[at].value = value;
                    model[at].tag = step;
                }
                Err(_) => assert_eq!(tree.remove(key), None),
            }
            if step % 500 == 0 {
                check(&tree, &model);
                // An old version stays as it was while the writer goes on.
                versions.push((tree.clone(), model.clone()));
            }
        }
        check(&tree, &model);
        for (version, expected) in &versions {
            check(version, expected);
        }
    }

    #[test]
    fn locate_maps_every_point_of_the_cumulative_sum_to_its_item() {
        // Values of item `i`: mixed; all 1 (no leaf keeps its values); runs of 1 and of zeros
        // between mixed stretches (leaves of each kind in one tree); a single leaf (the root).
        type Values = fn(usize) -> u32;
        let patterns: [(usize, Values); 4] = [
            (600, |i| [3, 0, 1, 5, 0, 2][i % 6]),
            (600, |_| 1),
            (900, |i| match (i / 50) % 3 {
                0 => 1,
                1 => 0,
                _ => [4, 1, 0, 9][i % 4],
            }),
            (15, |i| [1, 1, 2, 0][i % 4]),
        ];
        for (len, value) in patterns {
            let mut tree = Tree::default();
            for i in 0..len {
                tree.insert(t(i as u64, value(i)));
            }
            let mut mass = 0u64;
            for r in 0..len {
                let v = u64::from(value(r));
                for m in mass..mass + v {
                    let found = tree.locate(m);
                    assert_eq!((found.rank, found.start), (r, mass));
                    assert_eq!((found.value, found.item.key), (v as u32, (0, r as u64)));
                }
                mass += v;
            }
            assert_eq!(mass, tree.total());
        }
    }

    /// A child's summary is 56 bytes, so that a full inner node fills mimalloc's 1 024-byte
    /// size class ([`Child`]).
    #[test]
    fn a_child_summary_takes_56_bytes() {
        assert_eq!(std::mem::size_of::<Child<T>>(), 56);
        assert!(INNER_MAX * std::mem::size_of::<Child<T>>() + 16 <= 1024);
    }

    #[test]
    fn appends_in_key_order_fill_leaves() {
        let mut tree = Tree::default();
        for i in 0..1600 {
            tree.insert(t(i, 1));
        }
        let Some(root) = &tree.root else { panic!() };
        let mut leaves = 0;
        fn count(node: &Node<T>, leaves: &mut usize) {
            match node {
                Node::Leaf(_) => *leaves += 1,
                Node::Inner(c) => c.iter().for_each(|c| count(&c.node, leaves)),
            }
        }
        count(root, &mut leaves);
        assert_eq!(
            leaves,
            1600usize.div_ceil(LEAF_MAX),
            "PEs in key order fill their leaves"
        );
    }

    #[test]
    fn update_where_changes_only_matching_items_and_keeps_old_versions() {
        let mut tree = Tree::default();
        for i in 0..500 {
            tree.insert(t(i, 1));
        }
        let old = tree.clone();
        tree.update_where(|t| t.key.1 % 7 == 0, |t| t.tag = 9);
        assert!(tree.iter().all(|t| (t.tag == 9) == (t.key.1 % 7 == 0)));
        assert!(old.iter().all(|t| t.tag == 0));
    }
}
