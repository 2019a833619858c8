//! What concurrent pulls share, by key: async locks on blobs and layers (two pulls that need
//! the same one take turns on that key only, so the second finds the work done instead of
//! repeating it, while different keys proceed in parallel; a failed first attempt simply lets
//! the next waiter try), and the progress counters of layers being fetched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One `T` per key while anyone holds it: a second `get` of a key finds the first's value;
/// once the last holder drops it, the key starts afresh.
pub struct Shared<T> {
    map: Mutex<HashMap<String, Weak<T>>>,
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Shared {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Shared<T> {
    pub fn get(&self, key: &str, new: impl FnOnce() -> T) -> Arc<T> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Entries whose last holder is gone are dead; drop them so the map stays small.
        map.retain(|_, w| w.strong_count() > 0);
        match map.get(key).and_then(Weak::upgrade) {
            Some(v) => v,
            None => {
                let v = Arc::new(new());
                map.insert(key.to_string(), Arc::downgrade(&v));
                v
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[derive(Default)]
pub struct KeyedLocks(Shared<AsyncMutex<()>>);

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        self.0.get(key, || AsyncMutex::new(())).lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let locks = Arc::new(KeyedLocks::default());
        let a = locks.lock("a").await;
        let _b = locks.lock("b").await;
        let l = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l.lock("a").await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a);
        waiter.await.unwrap();
        drop(_b);
        let _ = locks.lock("c").await;
        assert_eq!(locks.0.len(), 1);
    }

    #[test]
    fn shared_while_held() {
        let s = Shared::<u32>::default();
        let one = s.get("k", || 1);
        assert_eq!(*s.get("k", || 2), 1);
        drop(one);
        assert_eq!(*s.get("k", || 3), 3);
    }
}
