//! Refusals counted per key and interval: the first ones of each interval are audited one
//! by one, the rest only counted, and summed up in one entry per key once the interval is
//! over. Sync counts the projections it refuses this way, per peer and reason; the API its
//! refused calls, per client address. Either way no sender can grow the audit log faster
//! than a fixed number of entries per interval.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// The refusals of one key within one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// When the interval began (ms).
    pub since_ms: i64,
    /// How many were audited one by one.
    pub audited: u64,
    /// How many were counted past those.
    pub counted: u64,
    /// The latest one counted.
    pub latest: String,
}

impl Window {
    fn new(now: i64) -> Window {
        Window { since_ms: now, audited: 0, counted: 0, latest: String::new() }
    }
}

/// The windows of every key, at most `max_keys` of them apart: past it, the refusals of
/// keys not yet counted share the window of the `overflow` key.
#[derive(Debug)]
pub struct Refusals<K> {
    windows: Mutex<HashMap<K, Window>>,
    bound: Option<(usize, K)>,
}

impl<K> Default for Refusals<K> {
    fn default() -> Self {
        Refusals { windows: Mutex::default(), bound: None }
    }
}

impl<K: Hash + Eq + Clone> Refusals<K> {
    /// Windows of at most `max_keys` keys apart; the refusals of others count under
    /// `overflow`.
    pub fn bounded(max_keys: usize, overflow: K) -> Refusals<K> {
        Refusals { windows: Mutex::default(), bound: Some((max_keys, overflow)) }
    }

    /// Count a refusal under `key` at `now`, `what` describing it: whether it is audited
    /// one by one (among the first `limit` of its interval of `interval_ms`), and the key
    /// it was counted under with its interval before, if that ended with refusals counted.
    pub fn admit(
        &self,
        key: K,
        limit: u64,
        interval_ms: i64,
        now: i64,
        what: &str,
    ) -> (bool, Option<(K, Window)>) {
        let mut m = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let key = match &self.bound {
            Some((max, overflow)) if !m.contains_key(&key) && m.len() >= *max => overflow.clone(),
            _ => key,
        };
        let w = m.entry(key.clone()).or_insert_with(|| Window::new(now));
        let mut ended = None;
        if now - w.since_ms >= interval_ms {
            let before = std::mem::replace(w, Window::new(now));
            ended = (before.counted > 0).then_some((key, before));
        }
        if w.audited < limit {
            w.audited += 1;
            return (true, ended);
        }
        w.counted += 1;
        what.clone_into(&mut w.latest);
        (false, ended)
    }

    /// The windows that ended by `now` (every one with `all`, as the node stops) with
    /// refusals counted; every ended window is forgotten.
    pub fn ended(&self, now: i64, interval_ms: i64, all: bool) -> Vec<(K, Window)> {
        let mut m = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        m.retain(|key, w| {
            if !all && now - w.since_ms < interval_ms {
                return true;
            }
            if w.counted > 0 {
                out.push((key.clone(), w.clone()));
            }
            false
        });
        out
    }
}
