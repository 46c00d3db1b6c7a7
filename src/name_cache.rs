//! A map from config names (routes, providers) to pre-resolved values,
//! read without locks: how `/metrics` and `/stats` keep per-name handles
//! without a lock on the request path.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

/// A map from config names (routes, providers) to pre-resolved values,
/// read without locks. Writers copy the map; they only run the first time a
/// name is seen, and names come from the config, so the map stays small.
pub struct NameCache<V> {
    map: ArcSwap<HashMap<Box<str>, Arc<V>>>,
}

impl<V> NameCache<V> {
    pub fn new() -> Self {
        NameCache {
            map: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    pub fn get(&self, name: &str, make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(v) = self.map.load().get(name) {
            return v.clone();
        }
        let fresh = Arc::new(make());
        let mut winner = fresh.clone();
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            winner = m
                .entry(name.into())
                .or_insert_with(|| fresh.clone())
                .clone();
            m
        });
        winner
    }

    /// Every (name, value) seen so far, sorted by name.
    pub fn entries(&self) -> Vec<(String, Arc<V>)> {
        let mut v: Vec<(String, Arc<V>)> = self
            .map
            .load()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl<V> Default for NameCache<V> {
    fn default() -> Self {
        NameCache::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_cache_returns_the_same_handle() {
        let c: NameCache<u32> = NameCache::new();
        let a = c.get("x", || 1);
        let b = c.get("x", || 2);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(c.entries().len(), 1);
    }
}
