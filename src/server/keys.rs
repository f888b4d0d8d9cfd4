//! The API keys this process knows, by SHA-256 hash: the user behind each key seen (keys are never
//! revoked by this service, so a hit is always valid and saves a database round trip), and the
//! hashes looked up and not found, remembered for a while so that a client repeating an unknown
//! key costs no database query (keys are random: one that is unknown now stays unknown).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How long an unknown key is remembered.
pub const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(60);
/// Most unknown keys remembered at once (a client sending random keys cannot grow the cache
/// beyond this; the per-address lookup limit bounds what those cost the database).
pub const UNKNOWN_KEYS_MAX: usize = 10_000;

/// What the cache knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    Known(Uuid),
    Unknown,
    /// Not seen lately: ask the database.
    Miss,
}

/// Known and unknown keys, by hash.
#[derive(Default)]
pub struct KeyCache {
    known: RwLock<HashMap<String, Uuid>>,
    unknown: Mutex<HashMap<String, Instant>>,
}

impl KeyCache {
    pub fn get(&self, hash: &str) -> Cached {
        if let Some(user) = self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
        {
            return Cached::Known(*user);
        }
        let unknown = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        match unknown.get(hash) {
            Some(seen) if seen.elapsed() < UNKNOWN_KEY_TTL => Cached::Unknown,
            _ => Cached::Miss,
        }
    }

    /// `hash` belongs to `user`.
    pub fn insert_known(&self, hash: String, user: Uuid) {
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hash);
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, user);
    }

    /// The database has no key `hash`.
    pub fn insert_unknown(&self, hash: String) {
        let mut unknown = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        if unknown.len() >= UNKNOWN_KEYS_MAX {
            unknown.retain(|_, seen| seen.elapsed() < UNKNOWN_KEY_TTL);
            if unknown.len() >= UNKNOWN_KEYS_MAX {
                unknown.clear();
            }
        }
        unknown.insert(hash, Instant::now());
    }
}
