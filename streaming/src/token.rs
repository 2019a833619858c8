//! Single-use, expiring tokens that name a pending streaming request.
//! The CRI response carries the token in the URL; whoever presents it first
//! (within the TTL) gets the session, exactly once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::StreamingError;

/// Like kubelet's cache: bounds memory when nobody redeems tokens.
pub const MAX_IN_FLIGHT: usize = 1000;

pub struct TokenCache<T> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> TokenCache<T> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `value` under a fresh 32-byte random token (URL-safe base64).
    pub fn insert(&self, value: T) -> Result<String, StreamingError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| StreamingError::Random(e.to_string()))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (expiry, _)| *expiry > now);
        if map.len() >= MAX_IN_FLIGHT {
            return Err(StreamingError::TooManyInFlight(MAX_IN_FLIGHT));
        }
        map.insert(token.clone(), (now + self.ttl, value));
        Ok(token)
    }

    /// Removes and returns the value if the token exists and is unexpired.
    pub fn consume(&self, token: &str) -> Option<T> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (expiry, value) = map.remove(token)?;
        (expiry > Instant::now()).then_some(value)
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_and_url_safe() {
        let c = TokenCache::new(Duration::from_secs(60));
        let t = c.insert(1).unwrap();
        assert_eq!(t.len(), 43);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(c.consume(&t), Some(1));
        assert_eq!(c.consume(&t), None);
        assert_eq!(c.consume("nope"), None);
        assert_ne!(c.insert(2).unwrap(), t);
    }

    #[test]
    fn expires() {
        let c = TokenCache::new(Duration::from_millis(0));
        let t = c.insert(1).unwrap();
        assert_eq!(c.consume(&t), None);
    }

    #[test]
    fn bounded() {
        let c = TokenCache::new(Duration::from_secs(60));
        for i in 0..MAX_IN_FLIGHT {
            c.insert(i).unwrap();
        }
        assert!(matches!(
            c.insert(0),
            Err(StreamingError::TooManyInFlight(_))
        ));
    }
}
