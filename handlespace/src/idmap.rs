//! A compact hash map for per-PE indexes kept by the million: a pool's PE ID → key index, the
//! registrar's keep-alive states. Open addressing with linear probing over a table kept between
//! about 40 % and 90 % full whatever the number of entries: it grows by half instead of doubling
//! and shrinks after mass removals, so a map of n entries holds about n / 0.7 slots, where a
//! general-purpose map (power-of-two tables up to 87.5 % full) holds up to n / 0.44 (a 1 000-PE
//! pool's index: 17 instead of 35 bytes per PE). Keys mark empty slots with a reserved value (PE
//! ID 0, which is no PE), so a slot is just the key and the value. The hash is seeded per map:
//! PE IDs come from the network.

use std::hash::{BuildHasher, Hash};

/// A key of an [`IdMap`]: hashable, with a reserved value that marks an empty slot.
pub trait IdKey: Copy + Eq + Hash {
    /// The value no real key takes (e.g. PE ID 0).
    const EMPTY: Self;
}

impl IdKey for rserpool_protocol::PeId {
    const EMPTY: Self = rserpool_protocol::PeId(0);
}

/// Most entries per slot before the table grows (90 %).
const GROW_AT: (usize, usize) = (9, 10);
/// Fewest entries per slot before the table shrinks (40 %).
const SHRINK_AT: (usize, usize) = (4, 10);
/// Entries per slot after a resize (70 %).
const TARGET: (usize, usize) = (7, 10);

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct IdMap<K, V> {
    slots: Vec<(K, V)>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl<K: IdKey, V: Copy + Default> Default for IdMap<K, V> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<K: IdKey, V: Copy + Default> IdMap<K, V> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot where the probe for `key` starts.
    fn home(&self, key: &K) -> usize {
        let hash = self.hasher.hash_one(key);
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot holding `key`, or the empty slot where its probe ends.
    fn find(&self, key: &K) -> Result<usize, usize> {
        let n = self.slots.len();
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].0;
            if k == *key {
                return Ok(i);
            }
            if k == K::EMPTY {
                return Err(i);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        if self.len == 0 {
            return None;
        }
        self.find(key).ok().map(|i| &self.slots[i].1)
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if self.len == 0 {
            return None;
        }
        let i = self.find(key).ok()?;
        Some(&mut self.slots[i].1)
    }

    /// Sets the value of `key` (never [`IdKey::EMPTY`]); returns the previous one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        debug_assert!(key != K::EMPTY, "the empty key is reserved");
        if (self.len + 1) * GROW_AT.1 > self.slots.len() * GROW_AT.0 {
            self.resize(self.len + 1);
        }
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.slots[i].1, value)),
            Err(i) => {
                self.slots[i] = (key, value);
                self.len += 1;
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        if self.len == 0 {
            return None;
        }
        let mut hole = self.find(key).ok()?;
        let value = self.slots[hole].1;
        self.slots[hole] = (K::EMPTY, V::default());
        self.len -= 1;
        // Backward shift: move later entries of the run into the hole when their probe may
        // start at or before it, so that every probe still finds its key.
        let n = self.slots.len();
        let mut i = hole;
        loop {
            i = if i + 1 == n { 0 } else { i + 1 };
            let k = self.slots[i].0;
            if k == K::EMPTY {
                break;
            }
            let home = self.home(&k);
            // Distance from the entry's home to its slot, and to the hole, along the probe.
            let to_slot = (i + n - home) % n;
            let to_hole = (hole + n - home) % n;
            if to_hole <= to_slot {
                self.slots[hole] = self.slots[i];
                self.slots[i] = (K::EMPTY, V::default());
                hole = i;
            }
        }
        if self.len * SHRINK_AT.1 < self.slots.len() * SHRINK_AT.0 {
            self.resize(self.len);
        }
        Some(value)
    }

    /// Removes every entry and returns the memory.
    pub fn clear(&mut self) {
        self.slots = Vec::new();
        self.len = 0;
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots
            .iter()
            .filter(|(k, _)| *k != K::EMPTY)
            .map(|(k, v)| (k, v))
    }

    /// The entries with their values to change, in no particular order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.slots
            .iter_mut()
            .filter(|(k, _)| *k != K::EMPTY)
            .map(|(k, v)| (&*k, v))
    }

    /// Rebuilds the table for `entries` entries at the target fill (empty: no table).
    fn resize(&mut self, entries: usize) {
        let slots = if entries == 0 {
            0
        } else {
            (entries * TARGET.1).div_ceil(TARGET.0).max(4)
        };
        let old = std::mem::replace(&mut self.slots, vec![(K::EMPTY, V::default()); slots]);
        for (k, v) in old {
            if k != K::EMPTY {
                let i = self.find(&k).expect_err("keys are distinct");
                self.slots[i] = (k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rserpool_protocol::PeId;

    use super::*;
    use crate::Rng;

    #[test]
    fn agrees_with_a_hash_map_through_growth_and_shrinking() {
        let mut rng = Rng::seed(3);
        let mut map: IdMap<PeId, u32> = IdMap::default();
        let mut model: HashMap<u64, u32> = HashMap::new();
        for step in 0..60_000u32 {
            // A narrow key range, so that removals hit; phases of mostly inserts, then removals.
            let id = 1 + rng.below(5_000);
            let grow = (step / 10_000) % 2 == 0;
            if rng.below(4) < if grow { 3 } else { 1 } {
                assert_eq!(map.insert(PeId(id), step), model.insert(id, step));
            } else {
                assert_eq!(map.remove(&PeId(id)), model.remove(&id));
            }
            if step % 997 == 0 {
                assert_eq!(map.len(), model.len());
                for (&k, &v) in &model {
                    assert_eq!(map.get(&PeId(k)), Some(&v), "key {k}");
                }
                assert_eq!(map.iter().count(), model.len());
                let fill = map.len() as f64 / map.slots.len().max(1) as f64;
                assert!(
                    map.len() < 4 || (0.39..=0.91).contains(&fill),
                    "fill {fill}"
                );
            }
        }
        for (_, v) in map.iter_mut() {
            *v = 7;
        }
        assert!(map.iter().all(|(_, &v)| v == 7));
        map.clear();
        assert!(map.is_empty() && map.get(&PeId(1)).is_none());
    }

    #[test]
    fn a_thousand_entries_take_about_seventeen_bytes_each() {
        let mut map: IdMap<PeId, u32> = IdMap::default();
        for id in 1..=1000 {
            map.insert(PeId(id), 0);
        }
        let bytes = map.slots.capacity() * std::mem::size_of::<(PeId, u32)>();
        assert!(bytes <= 1000 * 24, "{bytes} bytes");
    }
}
