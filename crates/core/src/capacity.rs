//! Bounds on what the engine keeps per symbol, so no stream of events can grow its memory without
//! limit: caps on symbols tracked (market context), pending meta decisions and open positions.
//! When a map is full, the entry touched longest ago (by the transport's clock, ties by symbol)
//! makes room, counted.
//!
//! [`Recency`] is the index that finds that entry in O(log n). It is derived from the state (each
//! entry's time), so it is not part of a checkpoint: it is rebuilt when an engine is loaded.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::engine::BySymbol;
use crate::invalid::Invalid;

/// Default cap on symbols whose market context is kept.
pub const DEFAULT_MAX_SYMBOLS: usize = 10_000;
/// Default cap on pending meta decisions.
pub const DEFAULT_MAX_PENDING_DECISIONS: usize = 10_000;
/// Default cap on open positions.
pub const DEFAULT_MAX_OPEN_POSITIONS: usize = 10_000;

/// Caps on the per-symbol maps of the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capacity {
    /// Symbols whose latest prices are kept.
    pub max_symbols: usize,
    /// Pending meta decisions (signals no trade has used yet).
    pub max_pending_decisions: usize,
    /// Open positions.
    pub max_open_positions: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            max_symbols: DEFAULT_MAX_SYMBOLS,
            max_pending_decisions: DEFAULT_MAX_PENDING_DECISIONS,
            max_open_positions: DEFAULT_MAX_OPEN_POSITIONS,
        }
    }
}

impl Capacity {
    /// Checks every cap; the error names the key (under `limits.`).
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, value) in [
            ("max_symbols", self.max_symbols),
            ("max_pending_decisions", self.max_pending_decisions),
            ("max_open_positions", self.max_open_positions),
        ] {
            if value == 0 {
                return Err(Invalid::new(Some("capacity"), key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// An entry's age: its time, totally ordered (`f64::total_cmp`).
#[derive(Debug, Clone, Copy)]
struct Age(f64);

impl PartialEq for Age {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Age {}

impl PartialOrd for Age {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Age {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The entries of one per-symbol map, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Recency {
    order: BTreeSet<(Age, String)>,
}

impl Recency {
    /// The index of `map`, where `time` is an entry's age.
    pub fn of<T>(map: &BySymbol<T>, time: impl Fn(&T) -> f64) -> Self {
        Self {
            order: map
                .iter()
                .map(|(symbol, value)| (Age(time(value)), symbol.clone()))
                .collect(),
        }
    }

    /// Entries indexed.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Records that `symbol`'s entry, `before` at that time (if it existed), is now at `now`.
    pub fn touched(&mut self, symbol: &str, before: Option<f64>, now: f64) {
        if let Some(t) = before {
            self.order.remove(&(Age(t), symbol.to_string()));
        }
        self.order.insert((Age(now), symbol.to_string()));
    }

    /// Records that `symbol`'s entry at `time` was removed.
    pub fn removed(&mut self, symbol: &str, time: f64) {
        self.order.remove(&(Age(time), symbol.to_string()));
    }

    /// Removes the oldest entry of `map` and returns its symbol. Tolerates an index that went
    /// stale (entries changed behind its back): stale entries are skipped, and an index that runs
    /// out while the map is not empty is rebuilt once.
    pub fn evict_oldest<T>(
        &mut self,
        map: &mut BySymbol<T>,
        time: impl Fn(&T) -> f64,
    ) -> Option<(String, Arc<T>)> {
        let mut rebuilt = false;
        loop {
            let Some((age, symbol)) = self.order.pop_first() else {
                if rebuilt || map.is_empty() {
                    return None;
                }
                *self = Self::of(map, &time);
                rebuilt = true;
                continue;
            };
            if map.get(&symbol).is_some_and(|v| Age(time(v)) == age) {
                return map.remove(&symbol).map(|v| (symbol, v));
            }
        }
    }

    /// Evicts the oldest entries of `map` until fewer than `cap` remain; returns them, oldest
    /// first.
    pub fn make_room<T>(
        &mut self,
        map: &mut BySymbol<T>,
        cap: usize,
        time: impl Fn(&T) -> f64,
    ) -> Vec<(String, Arc<T>)> {
        let mut evicted = Vec::new();
        while map.len() >= cap {
            match self.evict_oldest(map, &time) {
                Some(entry) => evicted.push(entry),
                None => break,
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, f64)]) -> BySymbol<f64> {
        entries
            .iter()
            .map(|(s, t)| (s.to_string(), Arc::new(*t)))
            .collect()
    }

    #[test]
    fn evicts_oldest_first_ties_by_symbol() {
        let mut m = map(&[("C", 5.0), ("A", 7.0), ("B", 5.0)]);
        let mut r = Recency::of(&m, |t| *t);
        let order: Vec<String> = std::iter::from_fn(|| r.evict_oldest(&mut m, |t| *t))
            .map(|(s, _)| s)
            .collect();
        assert_eq!(order, ["B", "C", "A"]);
        assert!(m.is_empty() && r.is_empty());
    }

    #[test]
    fn making_room_evicts_the_oldest_until_below_the_cap() {
        let mut m = map(&[("C", 5.0), ("A", 7.0), ("B", 5.0), ("D", 1.0)]);
        let mut r = Recency::of(&m, |t| *t);
        let gone: Vec<String> = r
            .make_room(&mut m, 2, |t| *t)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(gone, ["D", "B", "C"]);
        assert_eq!(m.len(), 1);
        assert!(r.make_room(&mut m, 2, |t| *t).is_empty());
    }

    #[test]
    fn a_touched_entry_becomes_the_newest() {
        let mut m = map(&[("A", 1.0), ("B", 2.0)]);
        let mut r = Recency::of(&m, |t| *t);
        m.insert("A".into(), Arc::new(3.0));
        r.touched("A", Some(1.0), 3.0);
        assert_eq!(r.len(), 2);
        assert_eq!(r.evict_oldest(&mut m, |t| *t).unwrap().0, "B");
    }

    #[test]
    fn a_stale_index_is_skipped_or_rebuilt() {
        let mut m = map(&[("A", 1.0), ("B", 2.0)]);
        let mut r = Recency::of(&m, |t| *t);
        // Changed behind the index's back.
        m.insert("A".into(), Arc::new(9.0));
        m.insert("Z".into(), Arc::new(0.5));
        assert_eq!(r.evict_oldest(&mut m, |t| *t).unwrap().0, "B");
        // The index ran out: rebuilt from the map.
        assert_eq!(r.evict_oldest(&mut m, |t| *t).unwrap().0, "Z");
        assert_eq!(r.evict_oldest(&mut m, |t| *t).unwrap().0, "A");
        assert_eq!(r.evict_oldest(&mut m, |t| *t), None);
    }

    #[test]
    fn caps_must_be_positive() {
        assert_eq!(Capacity::default().validate(), Ok(()));
        let zero = Capacity {
            max_open_positions: 0,
            ..Capacity::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "capacity.max_open_positions must be at least 1"
        );
    }
}
